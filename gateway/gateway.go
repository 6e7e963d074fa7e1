// Package gateway assembles a running mail gateway from its parts: the spool,
// the stage plugins and the pipeline over them, the SMTP listeners, the
// router that relays what was accepted, and the admin listener. cmd/mailgate
// and the end-to-end tests use it; it holds no logic of its own beyond
// wiring and lifecycle (start in dependency order, stop in reverse).
package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/gateway/smtpd"
	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/policy"
)

// Options are the parts of a gateway that do not come from its config.
type Options struct {
	Logger *slog.Logger
	// PluginCommand returns the command line that serves a built-in stage
	// kind: the mailgate binary with arguments "plugin <kind>".
	PluginCommand func(kind string) []string
	// Router options (tests point MX delivery at a test port with them).
	Router []router.Option
	// Spool options (tests inject write failures with them).
	Spool spool.Options
}

// Gateway is one running mailgate.
type Gateway struct {
	cfg    *policy.Config
	log    *slog.Logger
	reg    *prometheus.Registry
	spool  *spool.Spool
	router *router.Router
	smtp   *smtpd.Server
	chain  *chain

	listeners []net.Listener
	admin     *http.Server
	adminL    net.Listener

	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New opens the spool, starts the stage plugins and builds every part, but
// listens on nothing yet.
func New(ctx context.Context, cfg *policy.Config, opts Options) (*Gateway, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{cfg: cfg, log: opts.Logger, reg: prometheus.NewRegistry()}
	g.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	sp, err := spool.OpenWith(filepath.Join(cfg.DataDir, "queue"), opts.Spool)
	if err != nil {
		return nil, fmt.Errorf("open spool: %w", err)
	}
	g.spool = sp

	rt, err := router.New(cfg, sp, opts.Logger, opts.Router...)
	if err != nil {
		sp.Close()
		return nil, fmt.Errorf("router: %w", err)
	}
	g.router = rt

	ch, err := newChain(ctx, cfg, opts, g.reg)
	if err != nil {
		sp.Close()
		return nil, err
	}
	g.chain = ch

	srv, err := smtpd.New(smtpd.Options{
		Config:   cfg,
		Spool:    sp,
		Routes:   routeMatcher{rt.Table()},
		Queue:    rt,
		Pipeline: ch.pipeline,
		Logger:   opts.Logger,
		Metrics:  smtpd.NewMetrics(g.reg),
	})
	if err != nil {
		ch.Close()
		sp.Close()
		return nil, err
	}
	g.smtp = srv
	return g, nil
}

// Start listens on the configured addresses and starts delivering.
func (g *Gateway) Start() error {
	ctx, cancel := context.WithCancel(context.Background())
	g.cancel = cancel
	for _, addr := range g.cfg.Server.Listen {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			g.Close()
			return fmt.Errorf("listen %s: %w", addr, err)
		}
		g.listeners = append(g.listeners, l)
	}
	if a := g.cfg.Admin.Listen; a != "" {
		l, err := net.Listen("tcp", a)
		if err != nil {
			g.Close()
			return fmt.Errorf("admin listen %s: %w", a, err)
		}
		g.adminL = l
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(g.reg, promhttp.HandlerOpts{}))
		mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
			w.Write([]byte("ok\n"))
		})
		g.admin = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.wg.Add(1)
		go func() {
			defer g.wg.Done()
			if err := g.admin.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
				g.log.Error("admin listener", "err", err)
			}
		}()
	}
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		if err := g.router.Run(ctx); err != nil && !errors.Is(err, context.Canceled) {
			g.log.Error("router stopped", "err", err)
		}
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
	if g.cancel != nil {
		g.cancel()
	}
	g.wg.Wait()
	g.chain.Close()
	return g.spool.Close()
}

// routeMatcher adapts the route table to smtpd's relay control.
type routeMatcher struct{ t *router.Table }

func (m routeMatcher) HasRoute(domain string) bool {
	_, ok := m.t.Match(domain)
	return ok
}
