// Package router delivers the mail in the spool: it picks each
// recipient's route ([[route]] by domain, else the domain's MX hosts),
// relays over SMTP through a pool of reused connections (or stores into a
// Maildir), keeps every recipient's outcome in the spool, retries
// temporary failures with exponential backoff until delivery.max_age, and
// returns a delivery status notification (RFC 3464) to the sender of
// recipients that failed for good. For routes with verify_rcpts it also
// asks the route's servers about a recipient at RCPT time, so that unknown
// users are refused then rather than bounced later.
//
// One goroutine (Run) owns the queue state and is the only writer of
// envelopes; deliveries run in bounded workers on copies and report back.
package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state/trace"
)

// ErrStopped is returned by the operator calls once Run has returned.
var ErrStopped = errors.New("router: stopped")

// Router schedules and performs deliveries. Create it with New, run it
// with Run; Enqueue, Reload and the operator calls are safe for concurrent
// use.
type Router struct {
	sp      *spool.Spool
	log     *slog.Logger
	pool    *pool // shared by every conf: connections outlive a reload
	mxPort  string
	workers int
	trace   *trace.Log
	m       *metrics
	// verified keeps the answers of recipient probes (VerifyRcpt), and
	// which routes did not answer lately; shared, if set, keeps the
	// answers instead, for every node of a cluster.
	verified verifyCache
	shared   Verdicts

	// conf is what a reload replaces. A delivery attempt loads it once
	// and uses that one throughout.
	conf atomic.Pointer[conf]

	mu       sync.Mutex
	incoming []*spool.Envelope
	runErr   error         // why Run stopped, if it failed
	wake     chan struct{} // a new envelope is in incoming
	ops      chan op
	stopped  chan struct{} // closed when Run returns
}

// Option changes a Router from its defaults.
type Option func(*Router)

// Trace makes the router record every attempt and outcome in t.
func Trace(t *trace.Log) Option { return func(r *Router) { r.trace = t } }

// Metrics registers the router's metrics with reg: delivery outcomes and,
// read from the queue at each scrape, its size and oldest message by
// destination.
func Metrics(reg prometheus.Registerer) Option { return func(r *Router) { r.m = newMetrics(r, reg) } }

// SharedVerdicts keeps the answers of recipient probes in v, which the
// nodes of a cluster share (nil: in the router's memory).
func SharedVerdicts(v Verdicts) Option { return func(r *Router) { r.shared = v } }

// conf is the part of a Router that follows the config.
type conf struct {
	cfg    *policy.Config
	table  *policy.RouteTable
	res    *resolver
	client *smtpClient
}

// New makes a Router for the routes and [delivery] settings of cfg, a
// config policy validated, over the spool sp.
func New(cfg *policy.Config, sp *spool.Spool, logger *slog.Logger, opts ...Option) (*Router, error) {
	dl := cfg.Delivery
	r := &Router{
		sp:      sp,
		log:     logger,
		pool:    newPool(dl.MaxConnections, time.Duration(dl.IdleConnTimeout)),
		mxPort:  "25",
		workers: 100,
		wake:    make(chan struct{}, 1),
		ops:     make(chan op),
		stopped: make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	if r.m == nil {
		r.m = newMetrics(r, nil)
	}
	c, err := r.newConf(cfg)
	if err != nil {
		return nil, err
	}
	r.conf.Store(c)
	return r, nil
}

// newConf builds what cfg asks for, or says why it cannot.
func (r *Router) newConf(cfg *policy.Config) (*conf, error) {
	res, err := newResolver(cfg.DNS.Servers, time.Duration(cfg.DNS.Timeout), r.mxPort)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	dl := cfg.Delivery
	return &conf{
		cfg:   cfg,
		table: policy.NewRouteTable(cfg.Routes),
		res:   res,
		client: &smtpClient{
			pool:           r.pool,
			helo:           dl.HeloName,
			connectTimeout: time.Duration(dl.ConnectTimeout),
			commandTimeout: time.Duration(dl.CommandTimeout),
		},
	}, nil
}

// Reload makes deliveries that start from now on use the routes, [dns]
// and [delivery] settings of cfg; those in progress finish as they began.
// The connection pool is kept, so delivery.max_connections and
// idle_conn_timeout stay as New had them (the gateway refuses a reload
// that changes them: restart needed).
func (r *Router) Reload(cfg *policy.Config) error {
	c, err := r.newConf(cfg)
	if err != nil {
		return err
	}
	r.conf.Store(c)
	return nil
}

// Enqueue hands a just-committed message to the router for an immediate
// first attempt. It never blocks; a message enqueued while Run is not
// running is picked up from the spool by the next Run.
func (r *Router) Enqueue(env *spool.Envelope) {
	r.mu.Lock()
	r.incoming = append(r.incoming, cloneEnvelope(env))
	r.mu.Unlock()
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// QueueOp runs an operator's op on queued message id: "retry" makes it
// due now, "hold" stops its delivery attempts until "release" lets it be
// delivered again, now; "delete" removes it without a DSN, after a
// delivery in progress.
func (r *Router) QueueOp(ctx context.Context, op, id string) error {
	fn, ok := map[string]func(*scheduler) error{
		"retry":   func(s *scheduler) error { return s.retry(id) },
		"hold":    func(s *scheduler) error { return s.hold(id, true) },
		"release": func(s *scheduler) error { return s.hold(id, false) },
		"delete":  func(s *scheduler) error { return s.remove(id) },
	}[op]
	if !ok {
		return fmt.Errorf("unknown queue operation %q", op)
	}
	return r.do(ctx, fn)
}

// op is an operator call, run by the Run goroutine.
type op struct {
	fn   func(*scheduler) error
	done chan error
}

func (r *Router) do(ctx context.Context, fn func(*scheduler) error) error {
	o := op{fn: fn, done: make(chan error, 1)}
	select {
	case r.ops <- o:
	case <-ctx.Done():
		return ctx.Err()
	case <-r.stopped:
		return ErrStopped
	}
	return <-o.done
}

// Run loads every queued message from the spool and delivers until ctx
// ends; call it once. It then waits for the deliveries in progress, which ctx's end
// cuts short: a cut-short attempt leaves its recipients pending, so they
// are delivered at least once after a restart.
func (r *Router) Run(ctx context.Context) error {
	defer close(r.stopped)
	err := r.run(ctx)
	if err != nil {
		r.mu.Lock()
		r.runErr = err
		r.mu.Unlock()
	}
	return err
}

// Err returns why Run failed, or nil: before Run, while it runs and after
// it ended with its context. Mail accepted while Err is not nil would
// never be delivered.
func (r *Router) Err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.runErr
}

func (r *Router) run(ctx context.Context) error {
	s := &scheduler{
		r:       r,
		items:   make(map[string]*item),
		results: make(chan outcome),
	}
	envs, err := r.sp.List()
	if err != nil {
		return fmt.Errorf("router: load queue: %w", err)
	}
	for _, env := range envs {
		s.add(env)
	}

	sweepCtx, stopSweep := context.WithCancel(context.Background())
	var sweeper sync.WaitGroup
	sweeper.Go(func() { r.sweep(sweepCtx) })
	defer func() {
		stopSweep()
		sweeper.Wait()
		r.pool.sweep(true)
	}()

	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		s.takeIncoming()
		s.startDue(ctx)
		// With every worker busy a finished job wakes the loop; a timer
		// for a message that is already due would only spin.
		if next, ok := s.nextDue(); ok && s.busy < r.workers {
			timer.Reset(time.Until(next))
		} else {
			timer.Stop()
		}
		select {
		case <-ctx.Done():
			for s.busy > 0 {
				s.finish(ctx, <-s.results)
			}
			return nil
		case <-r.wake:
		case o := <-r.ops:
			o.done <- o.fn(s)
		case out := <-s.results:
			s.finish(ctx, out)
		case <-timer.C:
		}
	}
}

// sweep closes idle connections once they are older than
// idle_conn_timeout, so that servers are not left holding them.
func (r *Router) sweep(ctx context.Context) {
	t := time.NewTicker(r.pool.idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.pool.sweep(false)
		}
	}
}

// backoff is the wait after the n-th attempt (n >= 1): retry_min doubled
// per attempt up to retry_max, plus up to 10% jitter so that messages
// that failed together do not retry in lockstep.
func backoff(n int, lo, hi time.Duration) time.Duration {
	d := lo
	for i := 1; i < n && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d + rand.N(d/10+1)
}

func cloneEnvelope(env *spool.Envelope) *spool.Envelope {
	c := *env
	c.Rcpts = slices.Clone(env.Rcpts)
	return &c
}
