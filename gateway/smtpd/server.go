// Package smtpd is the gateway's SMTP ingress: a go-smtp Backend and Session
// that enforce relay control and limits, stream DATA into the spool, run the
// filter chain before replying, and acknowledge with 250 only once the
// message is durable. It is the only place that speaks SMTP replies; every
// reply text is generic, details go to the log.
package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/policy"
)

// RouteMatcher says whether mail for a domain may be accepted from an
// untrusted client: it has a route.
type RouteMatcher interface {
	HasRoute(domain string) bool
}

// Queuer takes a committed message for delivery.
type Queuer interface {
	Enqueue(env *spool.Envelope)
}

// Options is everything a Server needs.
type Options struct {
	Config *policy.Config
	Spool  *spool.Spool
	Routes RouteMatcher
	Queue  Queuer
	// Pipeline runs the stages; nil runs none.
	Pipeline *pipeline.Pipeline
	Logger   *slog.Logger
	// Metrics, when set, counts replies by code.
	Metrics *Metrics
}

// Server is the SMTP listener side of the gateway.
type Server struct {
	opts    Options
	cfg     *policy.Server
	trusted []netip.Prefix
	srv     *smtp.Server
	log     *slog.Logger
	limits  *connLimits
}

// New builds a Server from its options.
func New(opts Options) (*Server, error) {
	cfg := &opts.Config.Server
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Pipeline == nil {
		p, err := pipeline.New(nil, opts.Config.Policy, pipeline.Options{})
		if err != nil {
			return nil, err
		}
		opts.Pipeline = p
	}
	trusted, err := parsePrefixes(cfg.TrustedNetworks)
	if err != nil {
		return nil, fmt.Errorf("server.trusted_networks: %w", err)
	}
	s := &Server{
		opts:    opts,
		cfg:     cfg,
		trusted: trusted,
		log:     opts.Logger,
		limits:  newConnLimits(cfg.MaxConnections, cfg.MaxConnectionsPerIP),
	}
	srv := smtp.NewServer(s)
	srv.Domain = opts.Config.Hostname
	srv.MaxMessageBytes = int64(cfg.MaxMessageSize)
	srv.MaxRecipients = cfg.MaxRecipients
	srv.MaxLineLength = cfg.MaxLineLength
	srv.ReadTimeout = time.Duration(cfg.CommandTimeout)
	srv.WriteTimeout = time.Duration(cfg.CommandTimeout)
	srv.EnableSMTPUTF8 = true
	srv.ErrorLog = slogPrinter{opts.Logger}
	if cfg.TLSCert != "" {
		cert, err := tls.LoadX509KeyPair(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("server.tls_cert: %w", err)
		}
		srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	}
	s.srv = srv
	return s, nil
}

// Serve accepts SMTP connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	return s.srv.Serve(&limitListener{Listener: l, limits: s.limits, log: s.log, metrics: s.opts.Metrics})
}

// Shutdown stops accepting and waits for sessions to end until ctx is done,
// then closes what is left. An unfinished DATA is aborted, never half-queued.
func (s *Server) Shutdown(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if ctx.Err() != nil {
		s.srv.Close()
	}
	return err
}

// Close stops the server at once.
func (s *Server) Close() error { return s.srv.Close() }

// NewSession implements smtp.Backend. go-smtp calls it at the first
// HELO/EHLO; the connect and helo phases run here and a rejection is kept
// to be answered at RCPT (as Postfix's smtpd_delay_reject), so it is logged
// with the envelope.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	return newSession(s, c), nil
}

func (s *Server) isTrusted(a netip.Addr) bool {
	for _, p := range s.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func parsePrefixes(list []string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, n := range list {
		if p, err := netip.ParsePrefix(n); err == nil {
			out = append(out, p.Masked())
			continue
		}
		a, err := netip.ParseAddr(n)
		if err != nil {
			return nil, fmt.Errorf("unexpected %q; expect a CIDR such as 10.0.0.0/8 or an IP address", n)
		}
		out = append(out, netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()))
	}
	return out, nil
}

// connLimits counts open connections in total and per client IP.
type connLimits struct {
	mu       sync.Mutex
	total    int
	perIP    map[netip.Addr]int
	maxTotal int
	maxPerIP int
}

func newConnLimits(maxTotal, maxPerIP int) *connLimits {
	return &connLimits{perIP: make(map[netip.Addr]int), maxTotal: maxTotal, maxPerIP: maxPerIP}
}

// acquire takes a slot for a; it returns false and a reason when a limit
// is reached.
func (l *connLimits) acquire(a netip.Addr) (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return false, "max_connections"
	}
	if l.maxPerIP > 0 && l.perIP[a] >= l.maxPerIP {
		return false, "max_connections_per_ip"
	}
	l.total++
	l.perIP[a]++
	return true, ""
}

func (l *connLimits) release(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[a]--; l.perIP[a] <= 0 {
		delete(l.perIP, a)
	}
}

// limitListener refuses connections over the limits with 421 before go-smtp
// sees them, so a flood from one address cannot starve other clients.
type limitListener struct {
	net.Listener
	limits  *connLimits
	log     *slog.Logger
	metrics *Metrics
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a := remoteAddr(c)
		if ok, why := l.limits.acquire(a); !ok {
			l.log.Warn("connection refused", "client", a, "limit", why)
			l.metrics.reply(421)
			go refuse(c)
			continue
		}
		return &limitedConn{Conn: c, release: func() { l.limits.release(a) }}, nil
	}
}

// refuse answers 421 (RFC 5321 §3.8: the server may close with 421 when it
// cannot serve) and closes.
func refuse(c net.Conn) {
	c.SetDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c, "421 4.7.0 Too many connections, try again later\r\n")
	c.Close()
}

type limitedConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *limitedConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func remoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// slogPrinter routes go-smtp's own error log into slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Debug("smtp", "msg", fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) { p.log.Debug("smtp", "msg", fmt.Sprint(v...)) }
