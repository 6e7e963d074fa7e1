// Package console is mailgate's web console, served by `mailgate serve`
// on [web] listen: the tracking center (every message's story from its
// trace), the quarantine for admins and, through signed links, for each
// recipient, the users' allow- and block-lists, the queue, and a
// dashboard of the gateway's metrics.
//
// Pages are rendered on the server (html/template, which escapes what it
// writes by context); the style sheet and one small script are embedded in
// the binary (go:embed) and nothing is loaded from elsewhere, so `go build`
// builds it all and a page works offline.
//
// # Security
//
// Every request is checked before anything else: its Host must be a name
// the console was told it has (421 otherwise: DNS rebinding), and every
// page but the login form, the assets and the end users' links needs a
// session. Admins log in with a name and password ([[web.user]], bcrypt
// or argon2id hashes); a session is a signed cookie (__Host-, Secure when
// served over TLS, HttpOnly, SameSite=Strict) that ends after
// session_ttl, at logout, or when the user's password hash or role
// changes in the config. A logout is kept in the state store
// (state.Revocations), since the cookie is valid by its signature alone:
// a copy of it is refused after a restart and on every node sharing the
// store. The check fails closed: while the store does not answer, a
// session is refused (503) unless this node's own memory settles it, and
// the store is asked on a context the client cannot cancel. Failed logins
// are limited per client address (an IPv6 /64) and name, and slowed down per name, never refused for it,
// so that nobody can lock an admin out. An end user needs no account: a digest mail carries a link
// signed with HMAC-SHA256 that names the recipient, what it allows (their
// whole quarantine, or one action on one message), the generation of
// their links and an expiry (link_ttl), and shows that recipient's
// quarantined mail only. Ending a recipient's links raises the generation
// in the state store: every link made before is refused on every node.
//
// A change (any POST) must carry the CSRF token of its session or link,
// and come from the console's own pages (net/http's CrossOriginProtection:
// Sec-Fetch-Site or Origin). Every response forbids inline script and
// style and any content from elsewhere (Content-Security-Policy), and
// quarantined mail is shown as text: its HTML is never given to the
// browser, so neither its script nor its remote images can reach the page.
package console

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/net/netutil"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/state"
)

// Options are what the console shows and acts on.
type Options struct {
	// Config returns the config in force; a reload changes what it
	// returns, and the console follows (users, hosts, TTLs).
	Config func() *policy.Config
	// Admin is the gateway as the admin API drives it: the queue and the
	// quarantine are changed through it only, so a release from the
	// console is the CLI's release, exactly once.
	Admin  admin.Backend
	Traces Traces
	Lists  state.Lists // the users' allow- and block-lists
	Audit  state.Audit // who released, deleted, allowed or blocked what
	// Revocations keeps the sessions logged out and the end users'
	// links revoked, so that they stay ended after a restart and on
	// every node sharing the store.
	Revocations state.Revocations
	// Claims decide which node of a cluster sends a recipient's daily
	// digest, so that each gets one a day from all the nodes together;
	// nil: this node sends every digest it is due.
	Claims state.Claims
	// Metrics are the gateway's metrics, for the dashboard.
	Metrics prometheus.Gatherer
	// Nodes is the registry of the nodes of a [cluster] with PostgreSQL,
	// for the Nodes page; nil on one node (no page). A node is stale
	// after StaleAfter without a heartbeat.
	Nodes      state.Nodes
	StaleAfter time.Duration
	// Engines returns the state of a cluster's PostgreSQL and Redis as
	// the node last found them (cluster.Node.Engines): while one is
	// away, every page says so. nil on one node.
	Engines func() admin.Health
	Logger  *slog.Logger
	// Now is the clock of sessions and links (tests move it); nil:
	// time.Now.
	Now func() time.Time
}

// Console serves the pages. Its methods are safe for concurrent use.
type Console struct {
	opts    Options
	log     *slog.Logger
	keys    keys
	logins  *loginLimiter
	revoked *revocations
	pages   *pages
	mux     *http.ServeMux
	samples sampler  // the dashboard's last hour
	top     topCache // the dashboard's tables of the last day
}

// New readies a console: it reads the signing key from [web]
// secret_file, making one on the first start.
func New(opts Options) (*Console, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Revocations == nil {
		return nil, errors.New("console: no store for the revocations of sessions and links")
	}
	cfg := opts.Config()
	secret, err := loadSecret(secretFile(cfg))
	if err != nil {
		return nil, fmt.Errorf("%s: web.secret_file: %w", cfg.Position("web.secret_file"), err)
	}
	pg, err := parsePages()
	if err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	if _, _, err := digestTemplates(cfg); err != nil {
		return nil, fmt.Errorf("console: %w", err)
	}
	c := &Console{opts: opts, log: opts.Logger, keys: newKeys(secret), logins: newLoginLimiter(),
		revoked: newRevocations(), pages: pg}
	c.routes()
	return c, nil
}

// secretFile is [web] secret_file, or its default under data_dir.
func secretFile(cfg *policy.Config) string {
	if cfg.Web.SecretFile != "" {
		return cfg.Web.SecretFile
	}
	return filepath.Join(cfg.DataDir, "web", "secret")
}

// Handler is the console as an http.Handler: every request goes through
// the Host check and gets the security headers first.
func (c *Console) Handler() http.Handler { return c.guard(c.mux) }

// maxWebConns bounds the console's open connections; more wait to be
// accepted.
const maxWebConns = 256

// Server is a console listening on [web] listen.
type Server struct {
	srv    *http.Server
	l      net.Listener
	log    *slog.Logger
	cancel context.CancelFunc
	done   chan struct{}
}

// Serve listens on [web] listen, with TLS when the config gives the
// console a certificate ([web] tls_cert, else [server]'s), and serves c
// until Close.
func (c *Console) Serve() (*Server, error) {
	cfg := c.opts.Config()
	l, err := net.Listen("tcp", cfg.Web.Listen)
	if err != nil {
		return nil, fmt.Errorf("web listen %s: %w", cfg.Web.Listen, err)
	}
	// The console is for a few people: a bounded number of connections,
	// each bounded in time and size, so that a flood of slow clients
	// costs little and leaves the SMTP side alone.
	l = netutil.LimitListener(l, maxWebConns)
	s := &Server{l: l, log: c.log, srv: &http.Server{
		Handler:           c.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       15 * time.Second,
		WriteTimeout:      60 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(c.log.Handler(), slog.LevelDebug),
	}}
	cert, _ := cfg.WebTLS()
	serve := func() error { return s.srv.Serve(l) }
	if cert != "" {
		certs, err := door.LoadCerts(func() (string, string) { return c.opts.Config().WebTLS() }, c.log)
		if err != nil {
			l.Close()
			return nil, fmt.Errorf("web tls: %w", err)
		}
		s.srv.TLSConfig = &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: certs.GetCertificate}
		serve = func() error { return s.srv.ServeTLS(l, "", "") }
	}
	go func() {
		if err := serve(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.log.Error("web listener", "err", err)
		}
	}()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		var wg sync.WaitGroup
		wg.Go(func() { c.sampleLoop(ctx) })
		c.digestLoop(ctx)
		wg.Wait()
	}()
	c.log.Info("web console listening", "addr", s.l.Addr().String(), "tls", cert != "")
	return s, nil
}

// Addr is the address the console listens on.
func (s *Server) Addr() net.Addr { return s.l.Addr() }

// Close stops serving and sending digests; requests under way get a
// second to finish.
func (s *Server) Close() error {
	s.cancel()
	<-s.done
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := s.srv.Shutdown(ctx); err != nil {
		return s.srv.Close()
	}
	return nil
}
