// Package smtpd is the gateway's SMTP ingress, in two parts. The driver
// (driver.go) runs a mail transaction: connect and helo phases, relay
// control, address checks, the rate limits (policy/ratelimit),
// max_recipients, verify_rcpts, the stages and policy, the limits on the
// message (max_message_size, max_hops, header size, bare_lf), the
// Received field, the quarantine, the commit to the spool, and Txn.end,
// which ends a transaction whatever the outcome. The
// session (session.go, server.go) is go-smtp's Backend and Session: it
// reads commands, DATA and BDAT, watches for a client that hangs up, and
// hands each command to the driver. `mailgate test` (gateway.DryRun) runs
// the same driver with delivery switched off.
//
// The driver lives here, not in a package of its own, because what it
// decides is a reply, and smtpd is the one place that words replies
// (replies.go): a package of its own would hand each decision back to be
// worded, logged, traced and counted, the hub this split removes. As
// maddy's SMTP endpoint drives a msgpipeline delivery, the driver never
// sees the connection, only a reader and a Watch.
//
// Replies are generic; details go to the log and the trace. A session runs
// under the config and chain it started with (its Driver); Reload changes
// what later sessions get, as Postfix's smtpd finishes under the old
// main.cf.
package smtpd

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/policy"
)

// Server is the SMTP listener side of the gateway.
type Server struct {
	opts   Options
	srv    *smtp.Server
	limits *door.Limits
	// pregreetCache is who passed or failed the pre-greet test.
	pregreetCache *door.Pregreet

	mu  sync.Mutex
	gen *generation // what new sessions run under
}

// generation is what a session runs under from its start to its end: a
// reload makes a new one for the sessions that start after it.
type generation struct {
	*Driver
	// Under Server.mu: the sessions using it, and whether a reload
	// replaced it; retired is called when both say it is unused.
	refs     int
	replaced bool
	retired  func()
}

// New builds a Server from its options.
func New(opts Options) (*Server, error) {
	d, err := NewDriver(opts)
	if err != nil {
		return nil, err
	}
	opts = d.opts // with its defaults
	cfg := &opts.Config.Server
	s := &Server{opts: opts, limits: door.NewLimits(cfg.MaxConnections, cfg.MaxConnectionsPerIP), gen: &generation{Driver: d}}
	s.srv = smtp.NewServer(s)
	s.srv.Domain = opts.Config.Hostname
	s.srv.MaxMessageBytes = int64(cfg.MaxMessageSize)
	s.srv.MaxRecipients = cfg.MaxRecipients
	s.srv.MaxLineLength = cfg.MaxLineLength
	s.srv.ReadTimeout = time.Duration(cfg.CommandTimeout)
	s.srv.WriteTimeout = time.Duration(cfg.CommandTimeout)
	s.srv.EnableSMTPUTF8 = true
	s.srv.ErrorLog = slogPrinter{opts.Logger}
	if cfg.TLSCert != "" {
		// The files of the config new sessions run under: a reload
		// (SIGHUP, as certbot's deploy hooks send) may name others.
		certs, err := door.LoadCerts(func() (string, string) {
			c := &s.current().opts.Config.Server
			return c.TLSCert, c.TLSKey
		}, opts.Logger)
		if err != nil {
			return nil, fmt.Errorf("server.tls_cert: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{GetCertificate: certs.GetCertificate, MinVersion: tls.VersionTLS12}
	}
	if s.pregreetCache, err = door.OpenPregreet(opts.Pregreet, opts.Config.DataDir, opts.Clock, opts.Logger, opts.Metrics.storeErr.Inc); err != nil {
		return nil, fmt.Errorf("server.pregreet_delay: %w", err)
	}
	return s, nil
}

// Update is what a reload gives the sessions that start after it.
type Update struct {
	Config   *policy.Config
	Pipeline *pipeline.Pipeline // nil runs no stages
	Routes   RouteMatcher
}

// Reload makes sessions that start from now on run under u; sessions in
// progress finish under what they started with. retired is called once
// no session uses what u replaces any more (at once if none does), so its
// stages can be stopped then. What go-smtp holds for every connection
// (hostname, the size, recipient and line limits, command_timeout, the
// TLS files) stays as New had it: the gateway refuses a reload that
// changes it (restart needed).
func (s *Server) Reload(u Update, retired func()) error {
	opts := s.opts
	opts.Config, opts.Pipeline, opts.Routes = u.Config, u.Pipeline, u.Routes
	d, err := NewDriver(opts)
	if err != nil {
		return err
	}
	// Other files named must load; the same files that do not load now
	// (a renewal half written) keep the certificate served.
	if c, o := &u.Config.Server, &s.current().opts.Config.Server; c.TLSCert != "" && (c.TLSCert != o.TLSCert || c.TLSKey != o.TLSKey) {
		if _, err := tls.LoadX509KeyPair(c.TLSCert, c.TLSKey); err != nil {
			return fmt.Errorf("server.tls_cert: %w", err)
		}
	}
	gen := &generation{Driver: d}
	s.limits.Set(u.Config.Server.MaxConnections, u.Config.Server.MaxConnectionsPerIP)
	s.mu.Lock()
	old := s.gen
	s.gen = gen
	old.replaced, old.retired = true, retired
	idle := old.refs == 0
	s.mu.Unlock()
	if idle && retired != nil {
		retired()
	}
	return nil
}

// current is the driver new sessions run under.
func (s *Server) current() *Driver {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.gen.Driver
}

// acquire returns the generation a new session runs under.
func (s *Server) acquire() *generation {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen.refs++
	return s.gen
}

// release ends a session's use of g.
func (s *Server) release(g *generation) {
	s.mu.Lock()
	g.refs--
	done := g.refs == 0 && g.replaced && g.retired != nil
	s.mu.Unlock()
	if done {
		g.retired()
	}
}

// Serve accepts SMTP connections on l until Shutdown.
func (s *Server) Serve(l net.Listener) error {
	if cfg := &s.opts.Config.Server; cfg.ProxyProtocol {
		l = door.Proxy(l, cfg.Proxies(), door.ProxyHeaderTimeout, func(peer netip.Addr, why string, err error) {
			attrs := []any{"peer", peer}
			if err != nil {
				attrs = append(attrs, "err", err)
			}
			s.opts.Logger.Warn("connection refused: "+why, attrs...)
			s.opts.Metrics.refused("proxy")
		})
	}
	// RFC 5321 §3.8: the server may close with 421 when it cannot serve.
	return s.srv.Serve(&door.Listener{Listener: l, Limits: s.limits, Greet: s.pregreet,
		Refusal: "421 4.7.0 Too many connections, try again later\r\n",
		Refused: func(c net.Conn, limit string) {
			s.opts.Logger.Warn("connection refused", "client", door.RemoteAddr(c), "limit", limit)
			s.opts.Metrics.reply(421)
		}})
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

// slogPrinter routes go-smtp's own error log into slog.
type slogPrinter struct{ log *slog.Logger }

func (p slogPrinter) Printf(format string, v ...any) {
	p.log.Debug("smtp", "msg", fmt.Sprintf(format, v...))
}

func (p slogPrinter) Println(v ...any) { p.log.Debug("smtp", "msg", fmt.Sprint(v...)) }
