// Package router delivers the mail in the spool: it picks each
// recipient's route ([[route]] by domain, else the domain's MX hosts),
// relays over SMTP through a pool of reused connections (or stores into a
// Maildir), keeps every recipient's outcome in the spool, retries
// temporary failures with exponential backoff until delivery.max_age, and
// returns a delivery status notification (RFC 3464) to the sender of
// recipients that failed for good.
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
	"sync"
	"time"

	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/policy"
)

// ErrNotFound is returned by the operator calls for an unknown queue ID.
var ErrNotFound = errors.New("router: no such message in the queue")

// ErrStopped is returned by the operator calls once Run has returned.
var ErrStopped = errors.New("router: stopped")

// Router schedules and performs deliveries. Create it with New, run it
// with Run; Enqueue and the operator calls are safe for concurrent use.
type Router struct {
	cfg     *policy.Config
	sp      *spool.Spool
	log     *slog.Logger
	table   *Table
	res     *resolver
	client  *smtpClient
	workers int

	mu       sync.Mutex
	incoming []*spool.Envelope
	wake     chan struct{} // a new envelope is in incoming
	ops      chan op
	stopped  chan struct{} // closed when Run returns
}

// Option changes a Router from its defaults.
type Option func(*Router)

// Workers bounds the deliveries in progress at once; default 100.
func Workers(n int) Option { return func(r *Router) { r.workers = n } }

// MXPort makes MX delivery use port instead of 25. MX records carry no
// port, so tests with a server on a loopback port need this.
func MXPort(port string) Option { return func(r *Router) { r.res.port = port } }

// New makes a Router for the routes and [delivery] settings of cfg
// (with defaults applied, as policy.Load does) over the spool sp.
func New(cfg *policy.Config, sp *spool.Spool, logger *slog.Logger, opts ...Option) (*Router, error) {
	table, err := NewTable(cfg.Routes)
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	res, err := newResolver(cfg.DNS.Servers, time.Duration(cfg.DNS.Timeout), "25")
	if err != nil {
		return nil, fmt.Errorf("router: %w", err)
	}
	dl := cfg.Delivery
	if dl.MaxConnections <= 0 || dl.RetryMin <= 0 || dl.RetryMax < dl.RetryMin || dl.MaxAge <= 0 || dl.IdleConnTimeout <= 0 {
		return nil, errors.New("router: [delivery] needs positive max_connections, retry_min, max_age and idle_conn_timeout, and retry_max >= retry_min")
	}
	r := &Router{
		cfg:   cfg,
		sp:    sp,
		log:   logger,
		table: table,
		res:   res,
		client: &smtpClient{
			pool:           newPool(dl.MaxConnections, time.Duration(dl.IdleConnTimeout)),
			helo:           dl.HeloName,
			connectTimeout: time.Duration(dl.ConnectTimeout),
			commandTimeout: time.Duration(dl.CommandTimeout),
		},
		workers: 100,
		wake:    make(chan struct{}, 1),
		ops:     make(chan op),
		stopped: make(chan struct{}),
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Table returns the route table, for relay control in smtpd.
func (r *Router) Table() *Table { return r.table }

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

// Retry makes a queued message due now.
func (r *Router) Retry(ctx context.Context, id string) error {
	return r.do(ctx, func(s *scheduler) error { return s.retry(id) })
}

// Hold stops delivery attempts of a message until Release.
func (r *Router) Hold(ctx context.Context, id string) error {
	return r.do(ctx, func(s *scheduler) error { return s.hold(id, true) })
}

// Release lets a held message be delivered again, now.
func (r *Router) Release(ctx context.Context, id string) error {
	return r.do(ctx, func(s *scheduler) error { return s.hold(id, false) })
}

// Delete removes a message from the queue without a DSN. A delivery in
// progress finishes first.
func (r *Router) Delete(ctx context.Context, id string) error {
	return r.do(ctx, func(s *scheduler) error { return s.remove(id) })
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
		r.client.pool.sweep(true)
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
	t := time.NewTicker(r.client.pool.idleTimeout / 2)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.client.pool.sweep(false)
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
	c.Rcpts = append([]spool.Recipient(nil), env.Rcpts...)
	return &c
}
