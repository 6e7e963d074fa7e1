package quarantine

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
)

// Shared is the quarantine of a node: on one node, its Store; in a
// [cluster], the store the nodes share (state.Quarantine, in PostgreSQL),
// so that any node lists, shows and releases what any node quarantined.
//
// While the shared store does not answer, a message to quarantine is
// kept in the node's own Store (the spill), as durable as ever before
// the 250, and Run moves it to the shared store when it answers again.
// Until then the node lists, shows and releases it from its disk, and
// the other nodes do not see it.
//
// A release in the shared store, to all the recipients not released yet
// or to some, happens once for each recipient: BeginRelease claims the
// message for a copy in this node's spool (a transaction decides between
// nodes, and the store keeps the copy's recipients), the copy is
// committed, EndRelease records it. A journal entry
// under <dir>/releases/, written before the copy is committed, survives
// a crash and PostgreSQL being away: Recover, before the router loads
// the spool, tells by the spool whether the copy was committed, and
// settle tells the shared store when it answers. Without the journal, a
// copy delivered (and gone from the spool) before the store heard of it
// would look never made, and the message could be released again.
type Shared struct {
	local *Store
	// store returns the shared store, or nil while it is not reached; nil
	// itself on one node.
	store func() state.Quarantine
	node  string
	// mine reports whether the releases under way under node in the
	// shared store are this process's alone (nil: always).
	mine func() bool
	// settleAfter is settleAfter; tests shorten it.
	settleAfter time.Duration
	log         *slog.Logger
	dir         string // the journal of releases under way

	// mu makes changes one at a time on this node: a release (local or
	// shared), a delete, the spill's move and the journal's settling.
	mu       sync.Mutex
	lastFail atomic.Int64 // when the shared store last failed a Put, Unix ns
}

// spillFor is how long after the shared store failed a Put new messages
// go straight to the spill, instead of waiting for it to fail again.
const spillFor = 5 * time.Second

// MoveEvery is how often Run moves the spill and settles the journal.
const MoveEvery = 2 * time.Second

// Share returns the quarantine of a node whose own store is local; store
// is nil on one node, and returns the cluster's shared store (nil while
// it is not reached) otherwise; node names this node in it. mine, if not
// nil, reports whether no other live process acts under node: until it
// does, settle leaves alone the releases under way under node that the
// journal does not know, for they may be the other's.
func Share(local *Store, store func() state.Quarantine, node string, mine func() bool, log *slog.Logger) (*Shared, error) {
	s := &Shared{local: local, store: store, node: node, mine: mine, log: log, dir: filepath.Join(local.dir, "releases"), settleAfter: settleAfter}
	if store != nil {
		if err := os.MkdirAll(s.dir, 0o700); err != nil {
			return nil, fmt.Errorf("open quarantine: %w", err)
		}
	}
	return s, nil
}

// shared returns the shared store, or nil; unreachable is set in a
// cluster whose store is not reached.
func (s *Shared) shared() (q state.Quarantine, unreachable error) {
	if s.store == nil {
		return nil, nil
	}
	if q = s.store(); q == nil {
		return nil, fmt.Errorf("quarantine: the cluster's PostgreSQL is not reached: %w", state.ErrUnavailable)
	}
	return q, nil
}

// Add keeps the message in the file msgPath under rec.ID: in the shared
// store, or in the spill when that fails. It returns once it is durable.
func (s *Shared) Add(ctx context.Context, rec *Record, msgPath string) error {
	q, _ := s.shared()
	if q == nil || time.Since(time.Unix(0, s.lastFail.Load())) < spillFor {
		return s.local.Add(ctx, rec, msgPath)
	}
	f, err := os.Open(msgPath)
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", rec.ID, err)
	}
	defer f.Close()
	cp := *rec
	if err = q.Put(ctx, &cp, f); err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return err // the caller went away: the store did not fail, and nobody waits for a 250
	}
	s.lastFail.Store(time.Now().UnixNano())
	s.log.Warn("quarantine: the cluster's store failed; the message is kept on this node's disk and moved when it answers", "id", rec.ID, "err", err)
	return s.local.Add(ctx, rec, msgPath)
}

// Get returns the record of id, from the spill or the shared store.
func (s *Shared) Get(ctx context.Context, id string) (*Record, error) {
	rec, err := s.local.Get(ctx, id)
	q, down := s.shared()
	if !errors.Is(err, ErrNotFound) || s.store == nil {
		return rec, err
	}
	if down != nil {
		return nil, fmt.Errorf("%w; messages quarantined on this node meanwhile are on its disk", down)
	}
	rec, err = q.Get(ctx, id)
	return rec, fromState(err)
}

// List returns what f selects at now, oldest first: the shared store's
// records and the spill's.
func (s *Shared) List(ctx context.Context, f Filter, now time.Time) ([]*Record, error) {
	recs, err := s.local.List(ctx, f, now)
	if err != nil || s.store == nil {
		return recs, err
	}
	q, down := s.shared()
	if down != nil {
		return nil, fmt.Errorf("%w; %d messages quarantined on this node meanwhile are on its disk", down, len(recs))
	}
	all, err := q.List(ctx, f.Window(now))
	if err != nil {
		return nil, err
	}
	all = append(all, recs...)
	slices.SortStableFunc(all, func(a, b *Record) int { return a.Time.Compare(b.Time) })
	return all, nil
}

// Message returns the bytes of message id.
func (s *Shared) Message(ctx context.Context, id string) (io.ReadCloser, error) {
	m, err := s.local.Message(ctx, id)
	if !errors.Is(err, ErrNotFound) || s.store == nil {
		return m, err
	}
	q, down := s.shared()
	if down != nil {
		return nil, down
	}
	m, err = q.Message(ctx, id)
	return m, fromState(err)
}

// Delete deletes message id for good.
func (s *Shared) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	err := s.local.Delete(ctx, id)
	if !errors.Is(err, ErrNotFound) || s.store == nil {
		return err
	}
	q, down := s.shared()
	if down != nil {
		return down
	}
	return fromState(q.Delete(ctx, id))
}

// Expire deletes what was quarantined more than retention before now and
// returns the IDs this node deleted (of two nodes expiring at once, each
// deletes some).
func (s *Shared) Expire(ctx context.Context, now time.Time, retention time.Duration) ([]string, error) {
	ids, err := s.local.Expire(ctx, now, retention)
	q, _ := s.shared()
	if err != nil || q == nil {
		return ids, err
	}
	old, err := q.List(ctx, state.QuarantineFilter{Until: now.Add(-retention)})
	if err != nil {
		return ids, err
	}
	var errs []error
	for _, rec := range old {
		if err := ctx.Err(); err != nil {
			return ids, errors.Join(append(errs, err)...)
		}
		switch err := q.Delete(ctx, rec.ID); {
		case err == nil:
			ids = append(ids, rec.ID)
		case !errors.Is(err, state.ErrNotFound):
			errs = append(errs, err)
		}
	}
	return ids, errors.Join(errs...)
}

// Writable reports whether a message could be quarantined now: the spill
// takes it whatever the shared store does.
func (s *Shared) Writable() error { return s.local.Writable() }

// Release queues a copy of message id in sp for delivery to rcpts, or to
// every recipient not released yet when rcpts is empty, once for each,
// and returns the copy's envelope for the caller to hand to the router.
// An error with an envelope says the copy is queued but the release not
// yet recorded everywhere.
func (s *Shared) Release(ctx context.Context, id string, sp Spooler, rcpts ...string) (*spool.Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, err := s.local.Get(ctx, id); !errors.Is(err, ErrNotFound) || s.store == nil {
		return s.local.Release(ctx, id, sp, rcpts...)
	}
	q, down := s.shared()
	if down != nil {
		return nil, down
	}
	// Once begun, the release is ended whatever the caller's context does.
	keep := context.WithoutCancel(ctx)
	begin := func(copyID string) (*Record, []string, error) {
		rec, err := q.BeginRelease(ctx, id, s.node, copyID, rcpts)
		if err != nil {
			return nil, nil, fromState(err)
		}
		if err := s.journal(id, copyID, nil); err != nil {
			return nil, nil, fmt.Errorf("release %s: %w", id, errors.Join(err, s.end(keep, q, id, copyID, false)))
		}
		return rec, rec.ReleasingTo(), nil
	}
	message := func() (io.ReadCloser, error) { return q.Message(keep, id) }
	end := func(copyID string, queued bool) error { return s.end(keep, q, id, copyID, queued) }
	return release(ctx, id, sp, begin, message, end)
}

// journalEntry is a release under way on this node, and, once known,
// whether its copy was committed.
type journalEntry struct {
	Copy   string `json:"copy"`
	Queued *bool  `json:"queued,omitempty"`
}

func (s *Shared) journalPath(id string) string { return filepath.Join(s.dir, id+".json") }

func (s *Shared) journal(id, copyID string, queued *bool) error {
	return s.local.writeJSON(s.journalPath(id), journalEntry{Copy: copyID, Queued: queued})
}

// end ends a release in the shared store, or notes in the journal how it
// ended, for settle to tell the store when it answers.
func (s *Shared) end(ctx context.Context, q state.Quarantine, id, copyID string, queued bool) error {
	err := q.EndRelease(ctx, id, copyID, queued)
	if err == nil {
		if err := os.Remove(s.journalPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			s.log.Warn("quarantine: journal entry not removed", "id", id, "err", err)
		}
		return nil
	}
	if jerr := s.journal(id, copyID, &queued); jerr != nil {
		return errors.Join(err, jerr)
	}
	return err
}

// Recover completes or undoes releases a crash interrupted: those of the
// spill, and, in a cluster, those the journal holds, by whether the spool
// has their copy. Call it before the router loads the spool. The shared
// store is told now if it answers, or by Run.
func (s *Shared) Recover(ctx context.Context, sp Spooler) error {
	if err := s.local.Recover(ctx, sp); err != nil || s.store == nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	entries, err := s.journalEntries()
	if err != nil {
		return err
	}
	for id, r := range entries {
		if r.Queued != nil {
			continue
		}
		_, err := sp.Load(r.Copy)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("recover release of %s: %w", id, err)
		}
		queued := err == nil
		if err := s.journal(id, r.Copy, &queued); err != nil {
			return fmt.Errorf("recover release of %s: %w", id, err)
		}
	}
	if q, _ := s.shared(); q != nil {
		s.settle(ctx, q)
	}
	return nil
}

// journalEntries reads the journal: queue ID → its release.
func (s *Shared) journalEntries() (map[string]journalEntry, error) {
	ids, err := spool.ReadIDs(s.dir, ".json")
	if err != nil {
		return nil, fmt.Errorf("quarantine journal: %w", err)
	}
	out := map[string]journalEntry{}
	for id := range ids {
		var r journalEntry
		b, err := os.ReadFile(s.journalPath(id))
		if err == nil {
			err = json.Unmarshal(b, &r)
		}
		if err != nil {
			return nil, fmt.Errorf("quarantine journal %s: %w", id, err)
		}
		out[id] = r
	}
	return out, nil
}

// settle tells the shared store how the releases of the journal ended,
// and ends those it has under way on this node that the journal does not
// know (their copy was never committed: the entry is written first),
// once the node's name is this process's alone (mine), and once they
// began settleAfter ago: a clone of this node that has just begun a
// release under the name (its heartbeats have not been found yet) knows
// it in its own journal. Under s.mu; failures are left for the next
// round.
func (s *Shared) settle(ctx context.Context, q state.Quarantine) {
	entries, err := s.journalEntries()
	if err != nil {
		s.log.Error("quarantine: journal unreadable", "err", err)
		return
	}
	for id, r := range entries {
		if r.Queued == nil {
			continue // Recover decides, before the router starts
		}
		if ctx.Err() != nil {
			return
		}
		// Detached, as a release once begun is: cancelled after its
		// commit, it would look ended from elsewhere to the next round.
		switch err := s.end(context.WithoutCancel(ctx), q, id, r.Copy, *r.Queued); {
		case errors.Is(err, state.ErrNotUnderWay):
			// Ended from elsewhere: this node was taken out of the
			// cluster (mailgate cluster remove) while it was away. Kept,
			// the entry would stop every round here.
			s.log.Error("quarantine: the cluster's store no longer has this node's release under way; it was ended from elsewhere (mailgate cluster remove?)",
				"id", id, "copy", r.Copy, "copy_queued", *r.Queued, "err", err)
		case err != nil && !errors.Is(err, state.ErrNotFound):
			return
		}
		os.Remove(s.journalPath(id))
	}
	if s.mine != nil && !s.mine() {
		return
	}
	under, err := q.List(ctx, state.QuarantineFilter{ReleasingOn: s.node})
	if err != nil {
		return
	}
	for _, rec := range under {
		if _, ok := entries[rec.ID]; ok || time.Since(rec.ReleasingSince) < s.settleAfter {
			continue
		}
		if err := q.EndRelease(ctx, rec.ID, rec.Releasing, false); err != nil {
			return
		}
	}
}

// settleAfter is how old a release under way under this node's name must
// be for settle to end it when the journal does not know it: longer than
// two heartbeats, after which two processes under one name have found
// each other (state.NameWatch), and a release's own time many times over.
const settleAfter = 30 * time.Second

// Run moves the spill to the shared store and settles the journal every
// MoveEvery while the shared store answers, until ctx ends. On one node
// it does nothing.
func (s *Shared) Run(ctx context.Context) {
	if s.store == nil {
		return
	}
	t := time.NewTicker(MoveEvery)
	defer t.Stop()
	for {
		if q, _ := s.shared(); q != nil {
			s.mu.Lock()
			s.settle(ctx, q)
			s.move(ctx, q)
			s.mu.Unlock()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// move puts the spill's messages in the shared store, with their release
// if they were released from the spill, and deletes them from the spill.
// A message the store has already (moved before a crash) is only
// deleted. Under s.mu.
func (s *Shared) move(ctx context.Context, q state.Quarantine) {
	recs, err := s.local.List(ctx, Filter{}, time.Now())
	if err != nil {
		s.log.Error("quarantine: spill unreadable", "err", err)
		return
	}
	moved := 0
	for _, rec := range recs {
		if ctx.Err() != nil {
			break
		}
		if _, err := copyRecord(ctx, s.local, q, rec, s.node); err != nil {
			s.log.Warn("quarantine: not moved to the cluster's store yet", "id", rec.ID, "err", err)
			return
		}
		if err := s.local.Delete(ctx, rec.ID); err != nil {
			s.log.Error("quarantine: moved, but not deleted from this node's disk", "id", rec.ID, "err", err)
			return
		}
		moved++
	}
	if moved > 0 {
		s.log.Info("quarantine: messages kept on this node's disk moved to the cluster's store", "messages", moved)
	}
}

// Copy copies every message of local into q, with its release state, and
// returns how many q did not have: mailgate cluster import. It can run
// again: a message q has already is left as it is, but for the releases
// made of it on local that q does not record yet (a run interrupted
// between a message and its releases).
func Copy(ctx context.Context, local *Store, q state.Quarantine, node string) (int, error) {
	recs, err := local.List(ctx, Filter{}, time.Now())
	if err != nil {
		return 0, err
	}
	n := 0
	for _, rec := range recs {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		added, err := copyRecord(ctx, local, q, rec, node)
		if err != nil {
			return n, err
		}
		if added {
			n++
		}
	}
	return n, nil
}

// copyRecord puts rec and its message into q, with the releases made of
// it, each done again in q. A release under way (a crash Recover has not
// settled) is not copied.
func copyRecord(ctx context.Context, local *Store, q state.Quarantine, rec *Record, node string) (added bool, err error) {
	if rec.Releasing != "" {
		return false, fmt.Errorf("quarantine %s: a release is under way", rec.ID)
	}
	m, err := local.Message(ctx, rec.ID)
	if err != nil {
		return false, err
	}
	defer m.Close()
	// Detached from here on: stopped between the Put and the releases,
	// the store would show a message released here as held, for another
	// node to release again.
	ctx = context.WithoutCancel(ctx)
	cp := *rec
	switch err := q.Put(ctx, &cp, m); {
	case err == nil:
		added = true
	case !errors.Is(err, state.ErrExists):
		return false, err
	}
	by := cmp.Or(rec.ReleaseNode, node)
	releases := rec.Releases
	if rec.Released != "" && len(releases) == 0 {
		releases = []state.QuarantineRelease{{QueueID: rec.Released}} // to all
	}
	for _, rel := range releases {
		rcpts := rel.Rcpts
		_, err := q.BeginRelease(ctx, rec.ID, by, rel.QueueID, rcpts)
		if errors.Is(err, state.ErrAlreadyReleased) {
			// Copied before; or a copy interrupted after its Put, and
			// another node released some of these recipients from the
			// store since: this node's release of the others is recorded
			// all the same, or they could be released a second time.
			if rcpts = unreleased(ctx, q, rec.ID, rel); len(rcpts) == 0 {
				continue
			}
			_, err = q.BeginRelease(ctx, rec.ID, by, rel.QueueID, rcpts)
		}
		if err == nil {
			err = q.EndRelease(ctx, rec.ID, rel.QueueID, true)
		}
		if err != nil {
			return added, err
		}
	}
	return added, nil
}

// unreleased returns the recipients of rel the store's record of id has
// not released, none if rel itself is recorded there (or the record
// cannot be read: the BeginRelease that failed said why).
func unreleased(ctx context.Context, q state.Quarantine, id string, rel state.QuarantineRelease) []string {
	rec, err := q.Get(ctx, id)
	if err != nil || rec.ReleasedAs(rel.QueueID) || rec.Released != "" {
		return nil
	}
	if len(rel.Rcpts) == 0 {
		return rec.Pending()
	}
	var out []string
	for _, a := range rel.Rcpts {
		if rec.ReleasedTo(a) == "" {
			out = append(out, a)
		}
	}
	return out
}

// fromState gives a shared store's "not found" the quarantine's meaning,
// so that the admin API answers 404 as on one node, keeping its text (the
// other errors of the store are the quarantine's already).
func fromState(err error) error {
	if errors.Is(err, state.ErrNotFound) {
		return meaning{err, ErrNotFound}
	}
	return err
}

type meaning struct {
	error
	is error
}

func (m meaning) Is(target error) bool { return target == m.is }
func (m meaning) Unwrap() error        { return m.error }
