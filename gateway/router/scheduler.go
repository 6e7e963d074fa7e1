package router

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"time"

	"github.com/mailgate/mailgate/dsn"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state/trace"
)

// scheduler is the queue state owned by the Run goroutine.
type scheduler struct {
	r       *Router
	items   map[string]*item
	due     dueHeap
	busy    int // jobs running
	results chan outcome
}

// item is one queued message.
type item struct {
	env     *spool.Envelope
	busy    bool // a job works on a copy of env
	deleted bool // Delete came while busy
	// unreported are the Failed recipients that no DSN covers yet.
	unreported []int
	at         time.Time // when it is due, while in the heap
	index      int       // in the heap; -1 when not in it
}

// outcome is the report of a finished job.
type outcome struct {
	it      *item
	results []result        // a delivery attempt
	dsn     *spool.Envelope // a DSN job: the DSN it queued
	dsnErr  error
	isDSN   bool
}

// wantDSN reports whether failures of env are reported to its sender.
// Never to the null sender, and never about a DSN: that is how mail
// loops are avoided (RFC 5321 §4.5.5, RFC 3464 §2).
func wantDSN(env *spool.Envelope) bool { return env.From != "" && !env.DSN }

func hasPending(env *spool.Envelope) bool {
	return slices.ContainsFunc(env.Rcpts, func(rc spool.Recipient) bool { return rc.Status == spool.Pending })
}

// add takes a message into the queue, once.
func (s *scheduler) add(env *spool.Envelope) {
	if _, ok := s.items[env.ID]; ok {
		return
	}
	it := &item{env: env, index: -1}
	if wantDSN(env) && !env.DSNSent {
		// A crash may have come between the recipients failing and
		// their DSN: report all of them, perhaps a second time but never not at
		// all.
		for i, rc := range env.Rcpts {
			if rc.Status == spool.Failed {
				it.unreported = append(it.unreported, i)
			}
		}
	}
	s.items[env.ID] = it
	switch {
	case env.Held:
	case hasPending(env):
		s.schedule(it, env.NextAttempt)
	default:
		// Only a DSN or the removal is left to do.
		s.schedule(it, time.Time{})
	}
}

func (s *scheduler) takeIncoming() {
	s.r.mu.Lock()
	in := s.r.incoming
	s.r.incoming = nil
	s.r.mu.Unlock()
	for _, env := range in {
		s.add(env)
	}
}

func (s *scheduler) schedule(it *item, at time.Time) {
	it.at = at
	if it.index >= 0 {
		heap.Fix(&s.due, it.index)
		return
	}
	heap.Push(&s.due, it)
}

func (s *scheduler) unschedule(it *item) {
	if it.index >= 0 {
		heap.Remove(&s.due, it.index)
	}
}

func (s *scheduler) nextDue() (time.Time, bool) {
	if len(s.due) == 0 {
		return time.Time{}, false
	}
	return s.due[0].at, true
}

// startDue starts the jobs of the messages that are due, as far as the
// worker limit allows.
func (s *scheduler) startDue(ctx context.Context) {
	now := time.Now()
	for ctx.Err() == nil && s.busy < s.r.workers && len(s.due) > 0 && !s.due[0].at.After(now) {
		it := heap.Pop(&s.due).(*item)
		switch {
		case len(it.unreported) > 0 && wantDSN(it.env):
			s.start(it, func(env *spool.Envelope) outcome {
				failed := make([]spool.Recipient, len(it.unreported))
				for k, i := range it.unreported {
					failed[k] = env.Rcpts[i]
				}
				d, err := s.r.queueDSN(ctx, env, failed)
				if err == nil {
					// As for a delivery (see note): a crash before the
					// envelope is stored must not send the DSN again.
					if err := s.r.sp.Note(env.ID, spool.Progress{DSNSent: true}); err != nil && !errors.Is(err, fs.ErrNotExist) {
						s.r.log.Error("note dsn", "queue_id", env.ID, "err", err)
					}
				}
				return outcome{it: it, isDSN: true, dsn: d, dsnErr: err}
			})
		case hasPending(it.env):
			s.start(it, func(env *spool.Envelope) outcome {
				return outcome{it: it, results: s.r.attempt(ctx, env)}
			})
		default:
			s.settle(it)
		}
	}
}

// start runs job on a copy of the item's envelope in a new goroutine.
func (s *scheduler) start(it *item, job func(*spool.Envelope) outcome) {
	it.busy = true
	s.busy++
	env := cloneEnvelope(it.env)
	go func() { s.results <- job(env) }()
}

// finish applies the outcome of a job to the queue.
func (s *scheduler) finish(ctx context.Context, out outcome) {
	it := out.it
	it.busy = false
	s.busy--
	if out.dsn != nil {
		it.unreported = nil
		it.env.DSNSent = true
		s.r.log.Info("dsn queued", "queue_id", it.env.ID, "dsn_id", out.dsn.ID, "to", it.env.From)
		s.r.trace.Record(trace.Event{QueueID: it.env.ID, MessageID: it.env.MessageID, Event: "dsn", Related: out.dsn.ID, Rcpts: []string{it.env.From}})
		s.add(out.dsn)
	}
	if it.deleted {
		s.drop(it)
		return
	}
	if out.dsnErr != nil {
		s.r.log.Error("dsn", "queue_id", it.env.ID, "err", out.dsnErr)
		if ctx.Err() == nil && !it.env.Held {
			// Try again later; until then the message stays queued.
			dl := s.r.conf.Load().cfg.Delivery
			s.schedule(it, time.Now().Add(backoff(1, time.Duration(dl.RetryMin), time.Duration(dl.RetryMax))))
		}
		return
	}
	if !out.isDSN {
		s.record(ctx, it, out.results)
	}
	s.settle(it)
}

// record applies one attempt's per-recipient results, expires what has
// waited max_age and plans the next attempt.
func (s *scheduler) record(ctx context.Context, it *item, results []result) {
	env := it.env
	dl := s.r.conf.Load().cfg.Delivery
	now := time.Now()
	var failed []int
	var deferred []*spool.Recipient
	attempted := false
	for _, res := range results {
		if res.abandoned {
			continue
		}
		attempted = true
		rc := &env.Rcpts[res.idx]
		rc.Status, rc.LastReply, rc.LastHost, rc.Updated = res.status, res.reply, res.host, now
		rc.Attempts++
		outcome := "deferred"
		switch rc.Status {
		case spool.Delivered:
			outcome = "relayed"
			s.r.log.Info("relayed", logAttrs(env, rc, now)...)
		case spool.Failed:
			outcome = "bounced"
			s.r.log.Info("bounced", logAttrs(env, rc, now)...)
			failed = append(failed, res.idx)
		default:
			deferred = append(deferred, rc)
		}
		s.r.m.outcome(outcome)
		s.r.trace.Record(trace.Event{QueueID: env.ID, MessageID: env.MessageID, Event: "attempt", Action: outcome,
			Rcpts: []string{rc.Addr}, Host: rc.LastHost, Reply: rc.LastReply})
	}
	if attempted {
		env.Attempts++
	}
	deadline := env.Received.Add(time.Duration(dl.MaxAge))
	if ctx.Err() == nil && !now.Before(deadline) {
		// Too old: what is still pending fails now.
		deferred = nil
		for i := range env.Rcpts {
			rc := &env.Rcpts[i]
			if rc.Status == spool.Pending {
				rc.Status, rc.Updated = spool.Failed, now
				s.r.log.Info("expired", logAttrs(env, rc, now)...)
				s.r.m.outcome("expired")
				s.r.trace.Record(trace.Event{QueueID: env.ID, MessageID: env.MessageID, Event: "expired", Action: "bounced",
					Rcpts: []string{rc.Addr}, Reply: rc.LastReply, Reason: "max_age reached"})
				failed = append(failed, i)
			}
		}
	}
	if attempted && hasPending(env) {
		// The last try comes at max age, so expiry is not late by a
		// whole backoff step.
		env.NextAttempt = now.Add(backoff(env.Attempts, time.Duration(dl.RetryMin), time.Duration(dl.RetryMax)))
		if env.NextAttempt.After(deadline) {
			env.NextAttempt = deadline
		}
	}
	for _, rc := range deferred {
		s.r.log.Info("deferred", append(logAttrs(env, rc, now), "next", env.NextAttempt.Sub(now).Round(time.Millisecond))...)
	}
	if len(failed) > 0 && wantDSN(env) {
		it.unreported = append(it.unreported, failed...)
		env.DSNSent = false
	}
}

// settle stores the item's envelope and schedules what is left to do, or
// removes the message once every recipient is done and its DSN queued.
func (s *scheduler) settle(it *item) {
	needDSN := len(it.unreported) > 0 && wantDSN(it.env)
	if !needDSN && !hasPending(it.env) {
		s.drop(it)
		return
	}
	if err := s.r.sp.Update(it.env); err != nil {
		s.r.log.Error("update envelope", "queue_id", it.env.ID, "err", err)
		if errors.Is(err, fs.ErrNotExist) {
			// Removed behind our back (queue delete in another process).
			s.unschedule(it)
			delete(s.items, it.env.ID)
			return
		}
	}
	switch {
	case it.env.Held:
		s.unschedule(it)
	case needDSN:
		s.schedule(it, time.Now())
	default:
		s.schedule(it, it.env.NextAttempt)
	}
}

// drop removes a message from the spool and the queue.
func (s *scheduler) drop(it *item) {
	s.unschedule(it)
	delete(s.items, it.env.ID)
	if err := s.r.sp.Remove(it.env.ID); err != nil && !errors.Is(err, fs.ErrNotExist) {
		s.r.log.Error("remove message", "queue_id", it.env.ID, "err", err)
	}
}

func (s *scheduler) retry(id string) error {
	it := s.items[id]
	if it == nil {
		return fmt.Errorf("retry %s: %w", id, spool.ErrNotFound)
	}
	if it.env.Held {
		return fmt.Errorf("retry %s: message is held; release it instead", id)
	}
	if !it.busy {
		s.schedule(it, time.Now())
	}
	s.r.trace.Record(trace.Event{QueueID: id, MessageID: it.env.MessageID, Event: "retry", Reason: "operator"})
	return nil
}

func (s *scheduler) hold(id string, held bool) error {
	it := s.items[id]
	if it == nil {
		return fmt.Errorf("hold %s: %w", id, spool.ErrNotFound)
	}
	if it.env.Held == held {
		return nil
	}
	it.env.Held = held
	if err := s.r.sp.Update(it.env); err != nil {
		it.env.Held = !held
		return fmt.Errorf("hold %s: %w", id, err)
	}
	if held {
		s.r.log.Info("held", "queue_id", id)
		s.r.trace.Record(trace.Event{QueueID: id, MessageID: it.env.MessageID, Event: "held", Reason: "operator"})
		s.unschedule(it)
		return nil
	}
	s.r.log.Info("released", "queue_id", id)
	s.r.trace.Record(trace.Event{QueueID: id, MessageID: it.env.MessageID, Event: "released", Reason: "operator"})
	if !it.busy {
		s.schedule(it, time.Now())
	}
	return nil
}

func (s *scheduler) remove(id string) error {
	it := s.items[id]
	if it == nil {
		return fmt.Errorf("delete %s: %w", id, spool.ErrNotFound)
	}
	s.r.log.Info("deleted", "queue_id", id)
	s.r.trace.Record(trace.Event{QueueID: id, MessageID: it.env.MessageID, Event: "deleted", Reason: "operator"})
	if it.busy {
		it.deleted = true
		return nil
	}
	s.drop(it)
	return nil
}

// queueDSN puts a DSN about failed, recipients of env, into the spool.
func (r *Router) queueDSN(ctx context.Context, env *spool.Envelope, failed []spool.Recipient) (*spool.Envelope, error) {
	cfg := r.conf.Load().cfg
	w, err := r.sp.Create()
	if err != nil {
		return nil, fmt.Errorf("create dsn: %w", err)
	}
	d := &dsn.Report{ID: w.ID(), Hostname: cfg.Hostname, From: cfg.Delivery.BounceFrom, To: env.From, Date: time.Now(),
		QueueID: env.ID, Arrival: env.Received, MaxAge: time.Duration(cfg.Delivery.MaxAge)}
	for _, rc := range failed {
		d.Failed = append(d.Failed, dsn.Failure{Addr: rc.Addr, Reply: rc.LastReply, Host: rc.LastHost, At: rc.Updated})
	}
	msg, err := r.sp.OpenMessage(env.ID)
	if err == nil {
		d.Header, err = dsn.ReadHeader(msg)
		msg.Close()
	}
	if err != nil {
		// The report matters more than the copy of the header.
		r.log.Warn("dsn without original header", "queue_id", env.ID, "err", err)
	}
	if err := d.Write(w); err != nil {
		w.Abort()
		return nil, fmt.Errorf("write dsn: %w", err)
	}
	denv := &spool.Envelope{
		// RFC 5321 §4.5.5: a DSN is sent from the null sender.
		From:      "",
		Rcpts:     []spool.Recipient{{Addr: env.From, Status: spool.Pending}},
		DSN:       true,
		MessageID: fmt.Sprintf("<%s@%s>", d.ID, cfg.Hostname),
	}
	if err := w.Commit(ctx, denv); err != nil {
		return nil, fmt.Errorf("commit dsn: %w", err)
	}
	return denv, nil
}

// dueHeap orders queued items by due time.
type dueHeap []*item

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index = i
	h[j].index = j
}
func (h *dueHeap) Push(x any) {
	it := x.(*item)
	it.index = len(*h)
	*h = append(*h, it)
}
func (h *dueHeap) Pop() any {
	old := *h
	it := old[len(old)-1]
	old[len(old)-1] = nil
	it.index = -1
	*h = old[:len(old)-1]
	return it
}
