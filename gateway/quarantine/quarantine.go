// Package quarantine keeps the messages policy decided to hold back, with
// their envelope, every stage verdict and the deciding reason, until an
// operator releases or deletes them or the retention period ends.
//
// # On-disk layout
//
//	<dir>/<id>.eml   the message as it would have been relayed
//	<dir>/<id>.json  the Record; its presence means "quarantined"
//	<dir>/tmp/       records and messages being written
//
// <id> is the queue ID the message got at MAIL FROM, so a trace, a log
// line and the quarantine all name it the same way.
//
// Add links (or copies) the spooled message to tmp/, flushes it, renames it
// into place, then writes the record to tmp/, flushes it and renames it
// into place, and flushes the directory: a record only ever appears
// complete, after its message, and Add returns only once both survive a
// crash, so the client's 250 is as durable as for a queued message. Open
// removes tmp/ and every .eml without a .json.
//
// # Release, exactly once
//
// Release copies the message into a new spool message and records the
// release in three durable steps, with the router hearing of the copy
// only after the last one:
//
//  1. the record names the new queue ID as Releasing;
//  2. the spool commits the copy (it is not handed to the router yet,
//     and a router learns of spool messages only at start or when
//     handed one, so nothing delivers it);
//  3. the record names it as Released.
//
// A crash before 2 leaves Releasing set and no committed copy: Recover
// clears Releasing and the message can be released again. A crash between
// 2 and 3 leaves Releasing set and a committed copy: Recover, which runs
// before the router loads the spool, finds the copy and completes step 3;
// the router then delivers the copy once. A second Release of a record
// with Released set fails with ErrAlreadyReleased naming the copy. The one
// case that breaks this is an operator deleting the copy from the queue
// between a crash and the next start: Recover then sees no copy and allows
// another release.
//
// A release may be for some of the recipients only (an end user releases
// a message for themselves): the same three steps then name those
// recipients (ReleasingRcpts, then a Release in Releases), each recipient
// is released once, and the message counts as released (Released) when
// its last recipient is.
package quarantine

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/durable"
	"github.com/mailgate/mailgate/state"
)

// The errors of the quarantine are the state's, so that the admin API and
// the console, which know no quarantine implementation, tell them apart:
// ErrNotFound for an ID it does not hold; ErrAlreadyReleased from Release
// for a message (or a recipient) released before, naming the queue ID of
// that release; ErrReleasing while another release of the message is
// under way, naming the node and its recipients; ErrNotRecipient for an
// address the message is not for. They are the same in a node's own
// quarantine and in the cluster's.
var (
	ErrNotFound        = state.ErrNotQuarantined
	ErrAlreadyReleased = state.ErrAlreadyReleased
	ErrReleasing       = state.ErrReleasing
	ErrNotRecipient    = state.ErrNotRecipient
)

// Record is what the quarantine keeps about a message besides its bytes:
// the same record, and the same JSON, on one node (a file per record) and
// in the store a cluster shares. Node and ReleaseNode are set in a
// cluster only.
type Record = state.QuarantineRecord

// Filter selects records, and the queue commands queued messages.
type Filter = state.Filter

// Spooler is the part of the spool a release needs.
type Spooler interface {
	Create() (*spool.Writer, error)
	Load(id string) (*spool.Envelope, error)
}

// Store is a quarantine directory. Its methods are safe for concurrent use
// within one process; the gateway is its only writer.
type Store struct {
	dir, tmp string
	// mu serializes changes: they are rare, and a release must not race
	// a delete or another release of the same message.
	mu sync.Mutex
}

// Open opens (creating it if needed) the quarantine under dir and removes
// what an interrupted Add left behind.
func Open(dir string) (*Store, error) {
	s := Read(dir)
	err := os.MkdirAll(dir, 0o700)
	if err == nil {
		err = os.RemoveAll(s.tmp)
	}
	if err == nil {
		err = os.Mkdir(s.tmp, 0o700)
	}
	var ids map[string]bool
	if err == nil {
		ids, err = spool.ReadIDs(dir, ".eml")
	}
	if err != nil {
		return nil, fmt.Errorf("open quarantine: %w", err)
	}
	for id := range ids {
		if _, err := os.Stat(s.recPath(id)); errors.Is(err, fs.ErrNotExist) {
			os.Remove(s.MessagePath(id))
		}
	}
	return s, nil
}

// Read returns the quarantine in dir for reading only (mailgate cluster
// import, next to a running gateway): unlike Open it removes nothing.
func Read(dir string) *Store { return &Store{dir: dir, tmp: filepath.Join(dir, "tmp")} }

// MessagePath is the file holding the bytes of quarantined message id.
func (s *Store) MessagePath(id string) string { return filepath.Join(s.dir, id+".eml") }
func (s *Store) recPath(id string) string     { return filepath.Join(s.dir, id+".json") }

// Message returns the bytes of quarantined message id.
func (s *Store) Message(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := s.Get(ctx, id); err != nil {
		return nil, err
	}
	return os.Open(s.MessagePath(id))
}

// Add puts the message in the file msgPath (a spooled message that is
// not committed; the caller aborts it afterwards) into the quarantine
// under rec.ID. It returns once message and record are on stable storage.
func (s *Store) Add(ctx context.Context, rec *Record, msgPath string) error {
	if !spool.ValidID(rec.ID) {
		return fmt.Errorf("quarantine %q: invalid queue ID", rec.ID)
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now().UTC()
	}
	tmp := filepath.Join(s.tmp, rec.ID+".eml")
	// A hard link costs nothing; across file systems, copy.
	if err := os.Link(msgPath, tmp); err != nil {
		if err := copyFile(msgPath, tmp); err != nil {
			return fmt.Errorf("quarantine %s: %w", rec.ID, err)
		}
	}
	err := durable.Sync(tmp)
	if err == nil {
		err = os.Rename(tmp, s.MessagePath(rec.ID))
	}
	if err == nil {
		err = s.writeRecord(rec)
	}
	if err != nil {
		os.Remove(tmp)
		os.Remove(s.MessagePath(rec.ID))
		return fmt.Errorf("quarantine %s: %w", rec.ID, err)
	}
	return nil
}

// writeRecord durably replaces (or creates) the record of rec.ID.
func (s *Store) writeRecord(rec *Record) error {
	return s.writeJSON(s.recPath(rec.ID), rec)
}

// writeJSON durably replaces (or creates) the file path, in the store's
// directory or one below it, with v as JSON: written to tmp/, flushed,
// renamed into place, and the directory flushed.
func (s *Store) writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := durable.WriteFile(path, append(b, '\n'), s.tmp); err != nil {
		return fmt.Errorf("write %s: %w", filepath.Base(path), err)
	}
	return nil
}

// Get returns the record of id.
func (s *Store) Get(ctx context.Context, id string) (*Record, error) {
	if !spool.ValidID(id) {
		return nil, fmt.Errorf("quarantine %q: %w", id, ErrNotFound)
	}
	b, err := os.ReadFile(s.recPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("quarantine %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("quarantine %s: %w", id, err)
	}
	rec := new(Record)
	if err := json.Unmarshal(b, rec); err != nil {
		return nil, fmt.Errorf("quarantine %s: %w", id, err)
	}
	return rec, nil
}

// List returns the records f selects at now, oldest first.
func (s *Store) List(ctx context.Context, f Filter, now time.Time) ([]*Record, error) {
	ids, err := spool.ReadIDs(s.dir, ".json")
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	var out []*Record
	for id := range ids {
		rec, err := s.Get(ctx, id)
		if errors.Is(err, ErrNotFound) {
			continue // deleted since ReadDir
		}
		if err != nil {
			return nil, fmt.Errorf("list quarantine: %w", err)
		}
		if f.Match(rec, now) {
			out = append(out, rec)
		}
	}
	slices.SortFunc(out, func(a, b *Record) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// Delete removes a message from the quarantine: the record first, so a
// crash in between leaves a message file that Open removes.
func (s *Store) Delete(ctx context.Context, id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.delete(id)
}

func (s *Store) delete(id string) error {
	if !spool.ValidID(id) {
		return fmt.Errorf("quarantine %q: %w", id, ErrNotFound)
	}
	if err := os.Remove(s.recPath(id)); errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quarantine %s: %w", id, ErrNotFound)
	} else if err != nil {
		return fmt.Errorf("quarantine delete %s: %w", id, err)
	}
	if err := os.Remove(s.MessagePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("quarantine delete %s: %w", id, err)
	}
	return nil
}

// Expire deletes the messages quarantined more than retention before now
// and returns their IDs.
func (s *Store) Expire(ctx context.Context, now time.Time, retention time.Duration) ([]string, error) {
	recs, err := s.List(ctx, Filter{OlderThan: retention}, now)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	var ids []string
	var errs []error
	for _, r := range recs {
		if err := s.delete(r.ID); err != nil && !errors.Is(err, ErrNotFound) {
			errs = append(errs, err)
			continue
		}
		ids = append(ids, r.ID)
	}
	return ids, errors.Join(errs...)
}

// Release queues a copy of message id in sp for delivery to rcpts, or to
// every recipient not released yet when rcpts is empty, and returns the
// copy's envelope, for the caller to hand to the router. See the package
// comment for why this is exactly once, for each recipient.
func (s *Store) Release(ctx context.Context, id string, sp Spooler, rcpts ...string) (*spool.Envelope, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rec *Record
	begin := func(copyID string) (r *Record, to []string, err error) {
		if rec, to, err = s.toRelease(ctx, id, copyID, rcpts); err == nil {
			err = s.writeRecord(rec)
		}
		return rec, to, err
	}
	end := func(copyID string, queued bool) error { return s.endRelease(rec, copyID, queued) }
	return release(ctx, id, sp, begin, func() (io.ReadCloser, error) { return os.Open(s.MessagePath(id)) }, end)
}

// toRelease returns the record of id marked as being released as copyID
// to rcpts (none: all not released yet), and those recipients.
func (s *Store) toRelease(ctx context.Context, id, copyID string, rcpts []string) (*Record, []string, error) {
	rec, err := s.Get(ctx, id)
	if err != nil {
		return nil, nil, err
	}
	to, err := rec.Begin(copyID, rcpts)
	if err != nil {
		return nil, nil, fmt.Errorf("quarantine %s: %w", id, err)
	}
	return rec, to, nil
}

// endRelease records the release copyID of rec as done (queued) or
// undone.
func (s *Store) endRelease(rec *Record, copyID string, queued bool) error {
	if queued {
		rec.Settle(copyID, rec.ReleasingRcpts, time.Now().UTC())
	}
	rec.Releasing, rec.ReleasingRcpts = "", nil
	return s.writeRecord(rec)
}

// release takes the three steps of a release (see the package comment),
// here and from the cluster's store: begin names the copy (1), which is
// committed (2), and end records it, or that it was not committed (3).
func release(ctx context.Context, id string, sp Spooler, begin func(copyID string) (*Record, []string, error),
	message func() (io.ReadCloser, error), end func(copyID string, queued bool) error) (*spool.Envelope, error) {
	w, err := sp.Create()
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", id, err)
	}
	rec, to, err := begin(w.ID())
	if err != nil {
		w.Abort()
		return nil, err
	}
	// Once begun, a release is ended whatever the caller's context does.
	ctx = context.WithoutCancel(ctx)
	env := spool.NewEnvelope(rec.From, to, rec.ClientAddr, rec.ClientHelo, rec.MessageID)
	m, err := message()
	if err == nil {
		_, err = io.Copy(w, m)
		m.Close()
	}
	if err == nil {
		err = w.Commit(ctx, env)
	}
	if err != nil {
		w.Abort()
		if eerr := end(w.ID(), false); eerr != nil {
			err = errors.Join(err, eerr)
		}
		return nil, fmt.Errorf("release %s: %w", id, err)
	}
	if err := end(env.ID, true); err != nil {
		// Queued: Recover, or the journal, completes the record.
		return env, fmt.Errorf("release %s: queued as %s, not recorded yet: %w", id, env.ID, err)
	}
	return env, nil
}

// Recover completes or undoes releases a crash interrupted. Call it before
// the router loads the spool.
func (s *Store) Recover(ctx context.Context, sp Spooler) error {
	recs, err := s.List(ctx, Filter{}, time.Now())
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rec := range recs {
		if rec.Releasing == "" {
			continue
		}
		_, err := sp.Load(rec.Releasing)
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("recover release of %s: %w", rec.ID, err)
		}
		if err := s.endRelease(rec, rec.Releasing, err == nil); err != nil {
			return fmt.Errorf("recover release of %s: %w", rec.ID, err)
		}
	}
	return nil
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	_, err = io.Copy(out, in)
	if cerr := out.Close(); err == nil {
		err = cerr
	}
	return err
}

// Writable reports whether a message could be quarantined now.
func (s *Store) Writable() error {
	f, err := os.CreateTemp(s.tmp, "probe.*")
	if err != nil {
		return err
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}
