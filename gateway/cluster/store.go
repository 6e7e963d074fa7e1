package cluster

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

// Store returns the node's store (state.Store): the SQLite file
// data_dir/state.db on one node (and in a cluster with Redis alone); the
// cluster's PostgreSQL with [cluster] postgres, whether it answers yet
// or not.
//
// In a cluster every operation goes to PostgreSQL, so that a list entry
// or an audit entry one node writes is what every node reads. While
// PostgreSQL is known to be away (an operation or a heartbeat found it
// unreachable) an operation fails at once with state.ErrUnavailable, and
// one a second tries it again, so that no caller waits for the timeout
// each time: the users' lists at RCPT fail open (console.ListCache keeps
// what it had), and the console says the store is unreachable.
func (n *Node) Store() state.Store {
	if n.local != nil {
		return n.local
	}
	return sharedStore{n}
}

// probeEvery is how often one operation may try PostgreSQL while it is
// known to be away; the others fail at once.
const probeEvery = time.Second

// use returns the cluster's store for an operation, or ErrUnavailable.
func (n *Node) use() (*sqlstore.Store, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	now := time.Now()
	switch {
	case n.store == nil && n.pgErr == nil:
		return nil, fmt.Errorf("%w: not connected yet", state.ErrUnavailable)
	case n.store == nil, n.pgErr != nil && now.Before(n.probeAt):
		return nil, fmt.Errorf("%w: %v", state.ErrUnavailable, n.pgErr)
	case n.pgErr != nil:
		n.probeAt = now.Add(probeEvery)
	}
	return n.store, nil
}

// done records whether PostgreSQL answered an operation and returns its
// error, marked state.ErrUnavailable when it did not answer. Only a
// success says it is up: an error may have come before any query (an
// entry refused by its own checks, a caller's cancellation), and must
// not end an outage the node knows of.
func (n *Node) done(err error) error {
	switch {
	case err == nil:
		n.result(nil)
	case sqlstore.Unreachable(err):
		n.result(err)
		return fmt.Errorf("%w: %w", state.ErrUnavailable, err)
	}
	return err
}

func call[T any](n *Node, op func(*sqlstore.Store) (T, error)) (T, error) {
	s, err := n.use()
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := op(s)
	return v, n.done(err)
}

func do(n *Node, op func(*sqlstore.Store) error) error {
	_, err := call(n, func(s *sqlstore.Store) (struct{}, error) { return struct{}{}, op(s) })
	return err
}

// sharedStore is the cluster's store as the node uses it (see Store).
type sharedStore struct{ n *Node }

func (s sharedStore) Quarantine() state.Quarantine   { return sharedQuarantine(s) }
func (s sharedStore) Traces() state.Traces           { return sharedTraces(s) }
func (s sharedStore) Lists() state.Lists             { return sharedLists(s) }
func (s sharedStore) DMARC() state.DMARCRecords      { return sharedDMARC(s) }
func (s sharedStore) Audit() state.Audit             { return sharedAudit(s) }
func (s sharedStore) Nodes() state.Nodes             { return sharedNodes(s) }
func (s sharedStore) Claims() state.Claims           { return sharedClaims(s) }
func (s sharedStore) Revocations() state.Revocations { return sharedRevocations(s) }

// Close does nothing: the node closes its connections (Node.Close).
func (s sharedStore) Close() error { return nil }

type (
	sharedQuarantine  sharedStore
	sharedTraces      sharedStore
	sharedLists       sharedStore
	sharedDMARC       sharedStore
	sharedAudit       sharedStore
	sharedNodes       sharedStore
	sharedClaims      sharedStore
	sharedRevocations sharedStore
)

func (q sharedQuarantine) Put(ctx context.Context, rec *state.QuarantineRecord, msg io.Reader) error {
	return do(q.n, func(s *sqlstore.Store) error { return s.Quarantine().Put(ctx, rec, msg) })
}

func (q sharedQuarantine) Get(ctx context.Context, id string) (*state.QuarantineRecord, error) {
	return call(q.n, func(s *sqlstore.Store) (*state.QuarantineRecord, error) { return s.Quarantine().Get(ctx, id) })
}

func (q sharedQuarantine) List(ctx context.Context, f state.QuarantineFilter) ([]*state.QuarantineRecord, error) {
	return call(q.n, func(s *sqlstore.Store) ([]*state.QuarantineRecord, error) { return s.Quarantine().List(ctx, f) })
}

func (q sharedQuarantine) Message(ctx context.Context, id string) (io.ReadCloser, error) {
	return call(q.n, func(s *sqlstore.Store) (io.ReadCloser, error) { return s.Quarantine().Message(ctx, id) })
}

func (q sharedQuarantine) Delete(ctx context.Context, id string) error {
	return do(q.n, func(s *sqlstore.Store) error { return s.Quarantine().Delete(ctx, id) })
}

func (q sharedQuarantine) BeginRelease(ctx context.Context, id, node, copyID string, rcpts []string) (*state.QuarantineRecord, error) {
	return call(q.n, func(s *sqlstore.Store) (*state.QuarantineRecord, error) {
		return s.Quarantine().BeginRelease(ctx, id, node, copyID, rcpts)
	})
}

func (q sharedQuarantine) EndRelease(ctx context.Context, id, copyID string, queued bool) error {
	return do(q.n, func(s *sqlstore.Store) error { return s.Quarantine().EndRelease(ctx, id, copyID, queued) })
}

func (t sharedTraces) Append(ctx context.Context, events ...trace.Event) error {
	return do(t.n, func(s *sqlstore.Store) error { return s.Traces().Append(ctx, events...) })
}

func (t sharedTraces) Find(ctx context.Context, id string) ([]trace.Event, error) {
	return call(t.n, func(s *sqlstore.Store) ([]trace.Event, error) { return s.Traces().Find(ctx, id) })
}

func (t sharedTraces) Search(ctx context.Context, f state.TraceFilter) ([]trace.Event, error) {
	return call(t.n, func(s *sqlstore.Store) ([]trace.Event, error) { return s.Traces().Search(ctx, f) })
}

func (t sharedTraces) Expire(ctx context.Context, before time.Time) (int64, error) {
	return call(t.n, func(s *sqlstore.Store) (int64, error) { return s.Traces().Expire(ctx, before) })
}

func (l sharedLists) Add(ctx context.Context, e state.ListEntry) error {
	return do(l.n, func(s *sqlstore.Store) error { return s.Lists().Add(ctx, e) })
}

func (l sharedLists) Remove(ctx context.Context, owner string, kind state.ListKind, sender string) error {
	return do(l.n, func(s *sqlstore.Store) error { return s.Lists().Remove(ctx, owner, kind, sender) })
}

func (l sharedLists) Entries(ctx context.Context, owner string) ([]state.ListEntry, error) {
	return call(l.n, func(s *sqlstore.Store) ([]state.ListEntry, error) { return s.Lists().Entries(ctx, owner) })
}

func (d sharedDMARC) Add(ctx context.Context, r state.DMARCRecord) error {
	return do(d.n, func(s *sqlstore.Store) error { return s.DMARC().Add(ctx, r) })
}

func (d sharedDMARC) Day(ctx context.Context, t time.Time) ([]state.DMARCRecord, error) {
	return call(d.n, func(s *sqlstore.Store) ([]state.DMARCRecord, error) { return s.DMARC().Day(ctx, t) })
}

func (d sharedDMARC) Expire(ctx context.Context, t time.Time) error {
	return do(d.n, func(s *sqlstore.Store) error { return s.DMARC().Expire(ctx, t) })
}

func (a sharedAudit) Record(ctx context.Context, e state.AuditEntry) error {
	return do(a.n, func(s *sqlstore.Store) error { return s.Audit().Record(ctx, e) })
}

func (a sharedAudit) Entries(ctx context.Context, f state.AuditFilter) ([]state.AuditEntry, error) {
	return call(a.n, func(s *sqlstore.Store) ([]state.AuditEntry, error) { return s.Audit().Entries(ctx, f) })
}

func (r sharedNodes) Heartbeat(ctx context.Context, nd state.Node) (state.Node, error) {
	return call(r.n, func(s *sqlstore.Store) (state.Node, error) { return s.Nodes().Heartbeat(ctx, nd) })
}

func (r sharedNodes) List(ctx context.Context) ([]state.Node, error) {
	return call(r.n, func(s *sqlstore.Store) ([]state.Node, error) { return s.Nodes().List(ctx) })
}

func (r sharedNodes) Remove(ctx context.Context, name string) error {
	return do(r.n, func(s *sqlstore.Store) error { return s.Nodes().Remove(ctx, name) })
}

// Claim answers false without asking while another live process reports
// under the node's name and this one is the younger (state.NameWatch):
// the older claims, once for the name.
func (c sharedClaims) Claim(ctx context.Context, key, node string) (bool, error) {
	if c.n.names.Yields() {
		return false, nil
	}
	return call(c.n, func(s *sqlstore.Store) (bool, error) { return s.Claims().Claim(ctx, key, node) })
}

func (c sharedClaims) Expire(ctx context.Context, t time.Time) error {
	return do(c.n, func(s *sqlstore.Store) error { return s.Claims().Expire(ctx, t) })
}

func (r sharedRevocations) RevokeSession(ctx context.Context, id string, exp time.Time) error {
	return do(r.n, func(s *sqlstore.Store) error { return s.Revocations().RevokeSession(ctx, id, exp) })
}

func (r sharedRevocations) SessionRevoked(ctx context.Context, id string) (bool, error) {
	return call(r.n, func(s *sqlstore.Store) (bool, error) { return s.Revocations().SessionRevoked(ctx, id) })
}

func (r sharedRevocations) LinkGeneration(ctx context.Context, rcpt string) (int64, error) {
	return call(r.n, func(s *sqlstore.Store) (int64, error) { return s.Revocations().LinkGeneration(ctx, rcpt) })
}

func (r sharedRevocations) RevokeLinks(ctx context.Context, rcpt string) (int64, error) {
	return call(r.n, func(s *sqlstore.Store) (int64, error) { return s.Revocations().RevokeLinks(ctx, rcpt) })
}
