// Package gateway assembles a running mail gateway from its parts: the spool,
// the quarantine, the message traces, the rate limits' state, the stage
// plugins and the pipeline over them, the SMTP listeners, the router that
// relays what was accepted, the pickup directory through which stages
// send mail (pickup.go), and the admin listener with its API. cmd/mailgate and the end-to-end
// tests use it; it holds no logic of its own beyond wiring, lifecycle
// (start in dependency order, stop in reverse) and reloading the config.
package gateway

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/console"
	"github.com/mailgate/mailgate/gateway/cluster"
	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/gateway/smtpd"
	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// Options are the parts of a gateway that do not come from its config.
type Options struct {
	Logger *slog.Logger
	// PluginCommand returns the command line that serves a built-in stage
	// kind: the mailgate binary with arguments "plugin <kind>". The other
	// kinds of a process group ([[stage]] process) are added after it.
	PluginCommand func(kind string) []string
	// Spool options (tests inject write failures with them).
	Spool spool.Options
	// LoadConfig reads the config file again, for Reload; nil makes
	// Reload fail (the embedded quickstart config has no file).
	LoadConfig func() (*policy.Config, error)
	// LogLevel, if set, follows [log] level on each reload.
	LogLevel *slog.LevelVar
	// Version and Revision, what the binary was built as, label
	// mailgate_build_info and the node in its cluster; Version "" is "dev".
	Version, Revision string
	// RateLimitNow is the rate limits' clock (tests move it); nil:
	// time.Now.
	RateLimitNow func() time.Time
}

// Gateway is one running mailgate.
type Gateway struct {
	opts   Options
	log    *slog.Logger
	reg    *prometheus.Registry
	stageM *pipeline.Metrics // shared by the chains of every reload
	spool  *spool.Spool
	quar   *quarantine.Shared
	trace  *trace.Log
	state  state.Store        // the node's, or the cluster's: see cluster.Node.Store
	lists  *console.ListCache // the users' lists, asked at every RCPT
	router *router.Router
	smtp   *smtpd.Server
	pickup *pickup
	node   *cluster.Node // the state shared with a cluster, or kept under data_dir

	reloading sync.Mutex // one reload at a time
	closed    bool       // under reloading: no more reloads
	mu        sync.Mutex
	cfg       *policy.Config // the config in force
	chain     *chain         // the chain new sessions get
	// chains are the chains some session may still use, chain included;
	// each is closed when the last session using it ends.
	chains map[*chain]bool

	listeners []net.Listener
	admin     *http.Server
	adminL    net.Listener
	web       *console.Server

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the spool, the quarantine and the traces, starts the stage
// plugins and builds every part, but listens on nothing yet. On error,
// what it had opened and started is closed again. cfg is validated
// first, so that the parts need not check it again.
func New(ctx context.Context, cfg *policy.Config, opts Options) (_ *Gateway, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	opts.Version = cmp.Or(opts.Version, "dev")
	// g is not the named result: "return nil, err" sets that to nil
	// before the undo below runs, and the undo steps need g.
	g := &Gateway{opts: opts, cfg: cfg, log: opts.Logger, reg: prometheus.NewRegistry(), chains: map[*chain]bool{}}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(g.reg, opts.Version, opts.Revision)
	g.stageM = pipeline.NewMetrics(g.reg)
	var undo []func()
	defer func() {
		if err != nil {
			for i := len(undo) - 1; i >= 0; i-- {
				undo[i]()
			}
		}
	}()

	if g.spool, err = spool.OpenWith(filepath.Join(cfg.DataDir, "queue"), opts.Spool); err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	undo = append(undo, func() { g.spool.Close() })
	if g.node, err = cluster.Open(ctx, cfg, opts.Logger, g.reg, opts.Version); err != nil {
		return nil, err
	}
	undo = append(undo, g.node.Close)
	if g.quar, err = g.node.OpenQuarantine(); err != nil {
		return nil, err
	}
	// Before the router loads the spool: see the quarantine package.
	if err = g.quar.Recover(ctx, g.spool); err != nil {
		return nil, err
	}
	if g.trace, err = trace.Open(filepath.Join(cfg.DataDir, "trace"), opts.Logger); err != nil {
		return nil, err
	}
	undo = append(undo, func() { g.trace.Close() })
	g.state = g.node.Store()
	g.lists = console.NewListCache(g.state.Lists(), 10*time.Second)

	if g.router, err = router.New(cfg, g.spool, opts.Logger, router.Trace(g.trace), router.Metrics(g.reg),
		router.SharedVerdicts(g.node.Verdicts())); err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}

	// Before the router loads the spool: see pickup.
	if err = g.newPickup(ctx, cfg.DataDir); err != nil {
		return nil, err
	}

	ch, err := newChain(ctx, cfg, opts, g.reg, g.stageM, g.lists, nil)
	if err != nil {
		return nil, err
	}
	undo = append(undo, ch.Close)
	g.chain = ch
	g.chains[ch] = true

	limits := ratelimit.Env{Now: opts.RateLimitNow, Metrics: ratelimit.NewMetrics(g.reg), Logger: opts.Logger}
	limits.Store = g.node.RateLimits(ratelimit.FileOptions{Now: limits.Now, Logger: limits.Logger, Metrics: limits.Metrics})

	g.smtp, err = smtpd.New(smtpd.Options{
		Config:     cfg,
		Spool:      g.spool,
		Routes:     g.router.Routes(),
		Queue:      g.router,
		Quarantine: g.quar,
		Pipeline:   ch.pipeline,
		Logger:     opts.Logger,
		Metrics:    smtpd.NewMetrics(g.reg),
		Trace:      g.trace,
		RateLimits: limits,
		Pregreet:   g.node.Pregreet(nil),
	})
	if err != nil {
		return nil, err
	}
	return g, nil
}

// Start listens on the configured addresses and starts delivering.
func (g *Gateway) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	cfg := g.config()
	// A listener that never reached Serve is unknown to go-smtp, so
	// Close would leave it bound.
	fail := func(err error) error {
		for _, l := range g.listeners {
			l.Close()
		}
		g.listeners = nil
		g.Close()
		return err
	}
	for _, addr := range cfg.Server.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			return fail(fmt.Errorf("listen %s: %w", addr, err))
		}
		g.listeners = append(g.listeners, l)
	}
	if a := cfg.Admin.Listen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			return fail(fmt.Errorf("admin listen %s: %w", a, err))
		}
		g.adminL = l
		h := admin.Handler(adminBackend{g}, promhttp.HandlerFor(liveGatherer{g}, promhttp.HandlerOpts{}), a)
		g.admin = &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := g.admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Error("admin listener", "err", err)
			}
		}()
		g.log.Info("admin listening", "addr", l.Addr().String())
	}
	if cfg.Web.Listen != "" {
		o := console.Options{Config: g.config, Admin: adminBackend{g}, Logger: g.log,
			Traces: console.FileTraces(filepath.Join(cfg.DataDir, "trace")), Lists: g.lists,
			Audit: g.state.Audit(), Revocations: g.state.Revocations(), Claims: g.state.Claims(), Metrics: liveGatherer{g}, Engines: g.node.Engines}
		if cfg.Cluster.Postgres != "" { // every node's traces, and the nodes
			o.Traces, o.Nodes, o.StaleAfter = g.state.Traces(), g.state.Nodes(), cluster.StaleAfter
		}
		c, err := console.New(o)
		if err == nil {
			g.web, err = c.Serve()
		}
		if err != nil {
			return fail(err)
		}
	}
	g.wg.Add(4)
	go func() {
		defer g.wg.Done()
		g.pickup.run(ctx)
	}()
	go func() {
		defer g.wg.Done()
		g.node.Run(ctx, func() (string, string) { return g.config().Hash(), g.Health().Summary() })
	}()
	go func() {
		defer g.wg.Done()
		if err := g.router.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			g.log.Error("router stopped", "err", err)
		}
	}()
	go func() {
		defer g.wg.Done()
		g.expireLoop(ctx)
	}()
	for _, l := range g.listeners {
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := g.smtp.Serve(l); err != nil && !errors.Is(err, net.ErrClosed) {
				g.log.Error("smtp listener", "addr", l.Addr(), "err", err)
			}
		}()
		g.log.Info("listening", "addr", l.Addr().String())
	}
	return nil
}

// stateFile is the SQLite store of a node's users' lists, audit log and
// console revocations: the gateway writes it, `mailgate test` reads the
// lists from it.
func stateFile(cfg *policy.Config) string { return filepath.Join(cfg.DataDir, "state.db") }

// expireLoop deletes quarantined messages and traces past their retention,
// and what the node's store keeps past its time (cluster.Node.Expire), at
// start and then every hour.
func (g *Gateway) expireLoop(ctx context.Context) {
	t := time.NewTicker(time.Hour)
	defer t.Stop()
	for {
		now, cfg := time.Now(), g.config()
		keep := time.Duration(cfg.Quarantine.Retention)
		ids, err := g.quar.Expire(ctx, now, keep)
		for _, id := range ids {
			g.log.Info("quarantine expired", "id", id)
			g.trace.Record(trace.Event{QueueID: id, Event: "deleted", Reason: "quarantine retention " + keep.String() + " reached"})
		}
		if err != nil {
			g.log.Error("quarantine expiry", "err", err)
		}
		if err := errors.Join(g.trace.Expire(now, time.Duration(cfg.Trace.Retention)),
			g.node.Expire(now, time.Duration(cfg.Trace.Retention))); err != nil {
			g.log.Error("expiry", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SMTPAddrs returns the addresses the SMTP listeners are bound to.
func (g *Gateway) SMTPAddrs() []net.Addr {
	var out []net.Addr
	for _, l := range g.listeners {
		out = append(out, l.Addr())
	}
	return out
}

// AdminAddr returns the admin listener's address, or nil.
func (g *Gateway) AdminAddr() net.Addr {
	if g.adminL == nil {
		return nil
	}
	return g.adminL.Addr()
}

// WebAddr returns the console's address, or nil.
func (g *Gateway) WebAddr() net.Addr {
	if g.web == nil {
		return nil
	}
	return g.web.Addr()
}

// Shutdown stops accepting mail, lets sessions in progress finish until ctx
// is done, then stops delivery and the plugins. Accepted mail stays in the
// spool for the next start.
func (g *Gateway) Shutdown(ctx context.Context) error {
	err := g.smtp.Shutdown(ctx)
	g.Close()
	return err
}

// Close stops everything at once.
func (g *Gateway) Close() error {
	g.smtp.Close()
	if g.admin != nil {
		g.admin.Close()
	}
	if g.web != nil {
		g.web.Close()
	}
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	// A reload the admin API started finishes first, so that no chain it
	// starts is left running.
	g.reloading.Lock()
	g.closed = true
	g.reloading.Unlock()
	g.mu.Lock()
	chains := g.chains
	g.chains = map[*chain]bool{}
	g.mu.Unlock()
	for ch := range chains {
		ch.Close()
	}
	g.trace.Close()
	g.node.Close()
	return g.spool.Close()
}

func (g *Gateway) config() *policy.Config {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.cfg
}

// Health reports on each part the gateway needs to take mail: the spool
// must be writable with room for a message of max_message_size, delivery
// running, the quarantine writable, and each stage's plugin up with its
// circuit closed, unless its on_error lets mail through without it.
func (g *Gateway) Health() admin.Health {
	g.mu.Lock()
	cfg, ch := g.cfg, g.chain
	g.mu.Unlock()
	h := admin.Health{g.spoolHealth(cfg)}
	delivery := admin.Check{Name: "delivery", Status: admin.OK, Detail: "running"}
	if err := g.router.Err(); err != nil {
		delivery.Status, delivery.Detail = admin.Down, "stopped: "+err.Error()
	}
	quar := admin.Check{Name: "quarantine", Status: admin.OK, Detail: "writable"}
	if err := g.quar.Writable(); err != nil {
		quar.Status, quar.Detail = admin.Down, "not writable: "+err.Error()
	}
	h = append(h, delivery, quar)
	for i, p := range ch.plugins {
		h = append(h, stageHealth(p.Plugin, cfg.Stages[i].OnError))
	}
	return append(h, g.node.Health(context.Background())...)
}

// spoolHealth checks the spool as DATA would use it: a file written and
// flushed, and room for the largest message the gateway announces (EHLO
// SIZE, RFC 1870). A disk with a few blocks left takes the probe but
// answers every real message with 452; Postfix's smtpd likewise refuses
// mail below 1.5 times message_size_limit free (queue_minfree).
func (g *Gateway) spoolHealth(cfg *policy.Config) admin.Check {
	c := admin.Check{Name: "spool", Status: admin.Down}
	if err := g.spool.Err(); err != nil {
		c.Detail = "stopped: " + err.Error()
		return c
	}
	w, err := g.spool.Create()
	if err == nil {
		if _, err = w.Write([]byte("healthz\r\n")); err == nil {
			err = w.Flush()
		}
		w.Abort()
	}
	if err != nil {
		c.Detail = "not writable: " + err.Error()
		return c
	}
	free, err := g.spool.Free()
	if err != nil {
		c.Detail = err.Error()
		return c
	}
	if need := int64(cfg.Server.MaxMessageSize); free < need {
		c.Detail = fmt.Sprintf("%s free, less than max_message_size %s", bytesString(free), bytesString(need))
		return c
	}
	c.Status, c.Detail = admin.OK, fmt.Sprintf("writable, %s free", bytesString(free))
	return c
}

// stageHealth is the state of a stage's plugin. A plugin that is down or
// whose circuit is open stops mail if its on_error does (tempfail, the
// default, or reject); otherwise mail goes on without it.
func stageHealth(p *host.Plugin, onError string) admin.Check {
	c := admin.Check{Name: "stage " + p.Name(), Status: admin.OK}
	st := p.State()
	switch {
	case st.CircuitOpen:
		c.Detail = fmt.Sprintf("circuit open after %d failures, until %s", st.Failures, st.OpenUntil.UTC().Format(time.RFC3339))
	case !st.Up:
		c.Detail = "not running, restarting"
	default:
		c.Detail = fmt.Sprintf("up, pid %d", st.PID)
		return c
	}
	c.Detail += "; on_error " + onError
	c.Status = admin.Degraded
	if onError == "tempfail" || onError == "reject" {
		c.Status = admin.Down
	}
	return c
}

// bytesString writes n bytes in the largest decimal unit, as the config
// writes sizes.
func bytesString(n int64) string {
	for _, u := range []struct {
		unit string
		size int64
	}{{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
		if n >= u.size {
			return strings.TrimSuffix(fmt.Sprintf("%.1f", float64(n)/float64(u.size)), ".0") + u.unit
		}
	}
	return fmt.Sprintf("%dB", n)
}
