package quarantine

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// node is one gateway node's quarantine in a cluster: its own spool and
// disk, the cluster's PostgreSQL.
type node struct {
	q     *Shared
	sp    *spool.Spool
	dir   string
	store *sqlstore.Store
}

func newNode(t *testing.T, url, name string) *node {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	n := &node{sp: sp, dir: dir}
	n.store, err = sqlstore.OpenPostgres(context.Background(), url, sqlstore.Options{Node: name, Timeout: 5 * time.Second, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { n.store.Close() })
	n.reopen(t, name)
	return n
}

// reopen opens the node's quarantine again, as a restart does.
func (n *node) reopen(t *testing.T, name string) {
	t.Helper()
	local, err := Open(filepath.Join(n.dir, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	n.q, err = Share(local, func() state.Quarantine { return n.store.Quarantine() }, name, nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
}

// quarantine quarantines a message on n to rcpts (none: r@dest.test),
// as smtpd does.
func (n *node) quarantine(t *testing.T, body string, rcpts ...string) *Record {
	t.Helper()
	if len(rcpts) == 0 {
		rcpts = []string{"r@dest.test"}
	}
	w := spooled(t, n.sp, body)
	rec := &Record{ID: w.ID(), From: "s@sender.test", Rcpts: rcpts, Reason: "test", Time: time.Now().UTC()}
	if err := n.q.Add(context.Background(), rec, w.Path()); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	return rec
}

// read returns a reader of what an Open-like call returns.
func read(t *testing.T) func(io.ReadCloser, error) string {
	return func(rc io.ReadCloser, err error) string {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

// TestSharedReleaseFromAnotherNode: a message quarantined on node A is
// listed and shown on node B and released there, into B's spool, once:
// a release from A afterwards names B's copy. Nothing of it is on A's
// disk.
func TestSharedReleaseFromAnotherNode(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	a, b := newNode(t, url, "a"), newNode(t, url, "b")
	rec := a.quarantine(t, "Subject: held\r\n\r\nbody\r\n")
	if _, err := os.Stat(filepath.Join(a.dir, "quarantine", rec.ID+".json")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("record on A's disk (%v); want it in PostgreSQL only", err)
	}
	recs, err := b.q.List(context.Background(), Filter{From: "sender.test"}, time.Now())
	if err != nil || len(recs) != 1 || recs[0].ID != rec.ID || recs[0].Node != "a" {
		t.Fatalf("List on B = %v, %v; want %s from node a", recs, err, rec.ID)
	}
	if got := read(t)(b.q.Message(context.Background(), rec.ID)); got != "Subject: held\r\n\r\nbody\r\n" {
		t.Fatalf("message on B: %q", got)
	}
	env, err := b.q.Release(context.Background(), rec.ID, b.sp)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t)(b.sp.OpenMessage(env.ID)); got != "Subject: held\r\n\r\nbody\r\n" {
		t.Fatalf("copy in B's spool: %q", got)
	}
	if _, err := a.q.Release(context.Background(), rec.ID, a.sp); !errors.Is(err, ErrAlreadyReleased) {
		t.Fatalf("release on A after B: %v; want ErrAlreadyReleased", err)
	}
	if got, _ := a.q.Get(context.Background(), rec.ID); got.Released != env.ID || got.ReleaseNode != "b" {
		t.Fatalf("record on A: %+v; want released as %s on b", got, env.ID)
	}
	if envs, _ := a.sp.List(); len(envs) != 0 {
		t.Fatalf("A's spool holds %d messages; want none", len(envs))
	}
}

// rcptsOf returns the recipients of the copy env in sp.
func rcptsOf(t *testing.T, sp *spool.Spool, env *spool.Envelope) string {
	t.Helper()
	got, err := sp.Load(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range got.Rcpts {
		out = append(out, r.Addr)
	}
	return strings.Join(out, ",")
}

// TestSharedReleaseSomeRecipients: a message to bob and carol held on A
// is released to bob from B, into B's spool, and to the rest from A:
// each gets one copy, and neither node releases a recipient twice.
func TestSharedReleaseSomeRecipients(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	a, b := newNode(t, url, "a"), newNode(t, url, "b")
	rec := a.quarantine(t, "Subject: two\r\n\r\nx\r\n", "bob@dest.test", "carol@dest.test")
	ctx := context.Background()
	toBob, err := b.q.Release(ctx, rec.ID, b.sp, "Bob@dest.test")
	if err != nil {
		t.Fatal(err)
	}
	if got := rcptsOf(t, b.sp, toBob); got != "bob@dest.test" {
		t.Fatalf("B's copy is for %s; want bob@dest.test", got)
	}
	if _, err := a.q.Release(ctx, rec.ID, a.sp, "bob@dest.test", "carol@dest.test"); !errors.Is(err, ErrAlreadyReleased) || !strings.Contains(err.Error(), toBob.ID) {
		t.Fatalf("release to bob and carol on A after B: %v; want ErrAlreadyReleased naming %s", err, toBob.ID)
	}
	if _, err := a.q.Release(ctx, rec.ID, a.sp, "dave@dest.test"); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("release to dave: %v; want ErrNotRecipient", err)
	}
	if got, _ := a.q.Get(ctx, rec.ID); got.Released != "" || strings.Join(got.Pending(), ",") != "carol@dest.test" {
		t.Fatalf("record after the release to bob: %+v", got)
	}
	rest, err := a.q.Release(ctx, rec.ID, a.sp)
	if err != nil {
		t.Fatal(err)
	}
	if got := rcptsOf(t, a.sp, rest); got != "carol@dest.test" {
		t.Fatalf("A's copy is for %s; want carol@dest.test", got)
	}
	if got, _ := b.q.Get(ctx, rec.ID); got.Released != rest.ID || len(got.Releases) != 2 || got.ReleasedTo("bob@dest.test") != toBob.ID {
		t.Fatalf("record after both releases: %+v", got)
	}
	for _, n := range []*node{a, b} {
		if _, err := n.q.Release(ctx, rec.ID, n.sp, "carol@dest.test"); !errors.Is(err, ErrAlreadyReleased) {
			t.Errorf("a third release: %v; want ErrAlreadyReleased", err)
		}
	}
	na, _ := a.sp.List()
	nb, _ := b.sp.List()
	if len(na) != 1 || len(nb) != 1 {
		t.Fatalf("%d copies on A and %d on B; want one each", len(na), len(nb))
	}
}

// TestSharedReleaseRace: two nodes releasing the same messages at the
// same moment make one copy of each between them.
func TestSharedReleaseRace(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	a, b := newNode(t, url, "a"), newNode(t, url, "b")
	var ids []string
	for range 10 {
		ids = append(ids, a.quarantine(t, "Subject: race\r\n\r\nx\r\n").ID)
	}
	var wg sync.WaitGroup
	for _, n := range []*node{a, b} {
		wg.Go(func() {
			for _, id := range ids {
				_, err := n.q.Release(context.Background(), id, n.sp)
				if err != nil && !errors.Is(err, ErrReleasing) && !errors.Is(err, ErrAlreadyReleased) {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	na, _ := a.sp.List()
	nb, _ := b.sp.List()
	if len(na)+len(nb) != len(ids) {
		t.Fatalf("%d copies on A and %d on B of %d messages; want one each", len(na), len(nb), len(ids))
	}
}

// TestSharedSpill: with PostgreSQL down a message to quarantine is kept
// on the node's disk (and Add returns, so the client gets its 250); the
// node still shows it; when PostgreSQL is back Run moves it, and the
// other node releases it.
func TestSharedSpill(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	a, b := newNode(t, url, "a"), newNode(t, url, "b")
	pg.Stop()
	rec := a.quarantine(t, "Subject: spilled\r\n\r\nkept\r\n")
	if _, err := os.Stat(filepath.Join(a.dir, "quarantine", rec.ID+".json")); err != nil {
		t.Fatalf("spilled record: %v", err)
	}
	if got := read(t)(a.q.Message(context.Background(), rec.ID)); got != "Subject: spilled\r\n\r\nkept\r\n" {
		t.Fatalf("spilled message on A: %q", got)
	}
	if _, err := a.q.List(context.Background(), Filter{}, time.Now()); err == nil {
		t.Error("List with PostgreSQL down: no error; want one saying it is not reached")
	}

	pg.Restart()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.q.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := b.q.Get(ctx, rec.ID); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("spilled message not moved 60s after PostgreSQL came back")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
	if _, err := a.q.local.Get(ctx, rec.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("moved message still on A's disk: %v", err)
	}
	env, err := b.q.Release(context.Background(), rec.ID, b.sp)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t)(b.sp.OpenMessage(env.ID)); got != "Subject: spilled\r\n\r\nkept\r\n" {
		t.Fatalf("released copy: %q", got)
	}
}

// TestSharedAddCancelled: an Add whose caller went away fails and keeps
// nothing, and the next Add still goes to the shared store: a cancelled
// Put is not the store failing.
func TestSharedAddCancelled(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	a := newNode(t, url, "a")
	w := spooled(t, a.sp, "Subject: gone\r\n\r\nbody\r\n")
	defer w.Abort()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gone := &Record{ID: w.ID(), From: "s@sender.test", Rcpts: []string{"r@dest.test"}, Time: time.Now().UTC()}
	if err := a.q.Add(ctx, gone, w.Path()); !errors.Is(err, context.Canceled) {
		t.Fatalf("Add, cancelled: %v; want context.Canceled", err)
	}
	if _, err := a.q.Get(context.Background(), gone.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("cancelled Add kept the message: %v", err)
	}
	kept := a.quarantine(t, "Subject: kept\r\n\r\nbody\r\n")
	if _, err := a.q.local.Get(context.Background(), kept.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("the Add after a cancelled one spilled: %v", err)
	}
	if _, err := a.store.Quarantine().Get(context.Background(), kept.ID); err != nil {
		t.Errorf("the Add after a cancelled one is not in the shared store: %v", err)
	}
}

// TestSharedCrashMidRelease: a node that crashed during a release (the
// store holds it as under way on that node) settles it when it starts
// again, by its spool: a committed copy is the release (and is never
// made twice); no copy frees the message for another release. PostgreSQL
// being down at the restart changes nothing but when the store hears.
func TestSharedCrashMidRelease(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	a := newNode(t, url, "a")
	committed, lost := a.quarantine(t, "Subject: one\r\n\r\n1\r\n"), a.quarantine(t, "Subject: two\r\n\r\n2\r\n")
	q := a.store.Quarantine()
	ctx := context.Background()
	// The first crashed after its copy was committed, the second before.
	w := spooled(t, a.sp, "Subject: one\r\n\r\n1\r\n")
	if _, err := q.BeginRelease(ctx, committed.ID, "a", w.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if err := a.q.journal(committed.ID, w.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, spool.NewEnvelope(committed.From, committed.Rcpts, "", "", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.BeginRelease(ctx, lost.ID, "a", "LOSTCOPY0000000", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.q.journal(lost.ID, "LOSTCOPY0000000", nil); err != nil {
		t.Fatal(err)
	}

	pg.Stop()
	a.reopen(t, "a")
	if err := a.q.Recover(ctx, a.sp); err != nil {
		t.Fatal(err)
	}
	pg.Restart()
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); a.q.Run(runCtx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(60 * time.Second)
	for {
		r1, err1 := q.Get(ctx, committed.ID)
		r2, err2 := q.Get(ctx, lost.ID)
		if err1 == nil && err2 == nil && r1.Released == w.ID() && r2.Releasing == "" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not settled: %+v %v, %+v %v", r1, err1, r2, err2)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
	if _, err := a.q.Release(ctx, committed.ID, a.sp); !errors.Is(err, ErrAlreadyReleased) {
		t.Errorf("release of the one whose copy was committed: %v; want ErrAlreadyReleased", err)
	}
	env, err := a.q.Release(ctx, lost.ID, a.sp)
	if err != nil {
		t.Fatalf("release of the one whose copy was not: %v", err)
	}
	if envs, _ := a.sp.List(); len(envs) != 2 || (envs[0].ID != env.ID && envs[1].ID != env.ID) {
		t.Fatalf("spool: %d messages; want the two copies", len(envs))
	}
	if entries, _ := a.q.journalEntries(); len(entries) != 0 {
		t.Errorf("journal left: %v", entries)
	}
}

// TestSharedCrashMidPartialRelease: a node that crashed during releases
// to some recipients settles each by its spool: the recipient whose copy
// was committed is released, the other may be released again, and a
// release of the rest goes to the rest only.
func TestSharedCrashMidPartialRelease(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	a := newNode(t, url, "a")
	committed := a.quarantine(t, "Subject: one\r\n\r\n1\r\n", "bob@dest.test", "carol@dest.test")
	lost := a.quarantine(t, "Subject: two\r\n\r\n2\r\n", "bob@dest.test", "carol@dest.test")
	q := a.store.Quarantine()
	ctx := context.Background()
	w := spooled(t, a.sp, "Subject: one\r\n\r\n1\r\n")
	if _, err := q.BeginRelease(ctx, committed.ID, "a", w.ID(), []string{"bob@dest.test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.q.journal(committed.ID, w.ID(), nil); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx, spool.NewEnvelope(committed.From, []string{"bob@dest.test"}, "", "", "")); err != nil {
		t.Fatal(err)
	}
	if _, err := q.BeginRelease(ctx, lost.ID, "a", "LOSTCOPY0000000", []string{"carol@dest.test"}); err != nil {
		t.Fatal(err)
	}
	if err := a.q.journal(lost.ID, "LOSTCOPY0000000", nil); err != nil {
		t.Fatal(err)
	}

	a.reopen(t, "a")
	if err := a.q.Recover(ctx, a.sp); err != nil {
		t.Fatal(err)
	}
	r1, err1 := q.Get(ctx, committed.ID)
	r2, err2 := q.Get(ctx, lost.ID)
	if err1 != nil || err2 != nil || r1.Releasing != "" || r1.ReleasedTo("bob@dest.test") != w.ID() || strings.Join(r1.Pending(), ",") != "carol@dest.test" ||
		r2.Releasing != "" || strings.Join(r2.Pending(), ",") != "bob@dest.test,carol@dest.test" {
		t.Fatalf("after recovery: %+v %v, %+v %v", r1, err1, r2, err2)
	}
	if _, err := a.q.Release(ctx, committed.ID, a.sp, "bob@dest.test"); !errors.Is(err, ErrAlreadyReleased) {
		t.Errorf("release to bob, whose copy was committed: %v; want ErrAlreadyReleased", err)
	}
	rest, err := a.q.Release(ctx, committed.ID, a.sp)
	if err != nil {
		t.Fatal(err)
	}
	if got := rcptsOf(t, a.sp, rest); got != "carol@dest.test" {
		t.Errorf("the rest went to %s; want carol@dest.test", got)
	}
	again, err := a.q.Release(ctx, lost.ID, a.sp, "carol@dest.test")
	if err != nil {
		t.Fatalf("release to carol, whose copy was not committed: %v", err)
	}
	if got := rcptsOf(t, a.sp, again); got != "carol@dest.test" {
		t.Errorf("the copy went to %s; want carol@dest.test", got)
	}
	if entries, _ := a.q.journalEntries(); len(entries) != 0 {
		t.Errorf("journal left: %v", entries)
	}
}

// TestCopy: a single node's quarantine copied into the cluster's store
// keeps its messages and their releases, and a second copy adds nothing.
func TestCopy(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	local, sp, _ := open(t)
	kept := add(t, local, sp, "a@example.org", "b@example.test", "", time.Now().Add(-time.Hour))
	released := add(t, local, sp, "c@example.org", "d@example.test", "", time.Now())
	env, err := local.Release(context.Background(), released.ID, sp)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlstore.OpenPostgres(context.Background(), url, sqlstore.Options{Node: "single"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for i, want := range []int{2, 0} {
		n, err := Copy(context.Background(), local, st.Quarantine(), "single")
		if err != nil || n != want {
			t.Fatalf("copy %d: %d, %v; want %d", i+1, n, err, want)
		}
	}
	got, err := st.Quarantine().Get(context.Background(), released.ID)
	if err != nil || got.Released != env.ID {
		t.Fatalf("released message in the store: %+v, %v; want released as %s", got, err, env.ID)
	}
	if _, err := st.Quarantine().BeginRelease(context.Background(), kept.ID, "b", "COPY000000000000", nil); err != nil {
		t.Fatalf("the other message is not releasable in the store: %v", err)
	}
}

// TestCopyOverlappingRelease: a message copied into the cluster's store
// before (a move interrupted after its Put), released there since to
// some recipients by another node, while this node had released it to
// those and others: the copy records this node's release of the others,
// which must not be released a second time.
func TestCopyOverlappingRelease(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	local, sp, _ := open(t)
	w := spooled(t, sp, "Subject: hi\r\n\r\nbody\r\n")
	rec := &Record{ID: w.ID(), From: "a@a.test", Rcpts: []string{"x@dest.test", "y@dest.test", "z@dest.test"}, Time: time.Now(), Reason: "test"}
	if err := local.Add(context.Background(), rec, w.Path()); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	st, err := sqlstore.OpenPostgres(context.Background(), url, sqlstore.Options{Node: "b"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx, q := context.Background(), st.Quarantine()
	// The earlier, interrupted move: the record and message, no release.
	m, err := local.Message(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	cp := *rec
	if err := q.Put(ctx, &cp, m); err != nil {
		t.Fatal(err)
	}
	m.Close()
	// Node b releases y from the store.
	if _, err := q.BeginRelease(ctx, rec.ID, "b", "BCOPY00000000001", []string{"y@dest.test"}); err != nil {
		t.Fatal(err)
	}
	if err := q.EndRelease(ctx, rec.ID, "BCOPY00000000001", true); err != nil {
		t.Fatal(err)
	}
	// This node, meanwhile, released x and y from its disk.
	env, err := local.Release(ctx, rec.ID, sp, "x@dest.test", "y@dest.test")
	if err != nil {
		t.Fatal(err)
	}

	if _, err := Copy(ctx, local, q, "a"); err != nil {
		t.Fatal(err)
	}
	got, err := q.Get(ctx, rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.ReleasedTo("x@dest.test") != env.ID || got.ReleasedTo("y@dest.test") != "BCOPY00000000001" {
		t.Errorf("x released as %q (want %s), y as %q (want BCOPY00000000001)", got.ReleasedTo("x@dest.test"), env.ID, got.ReleasedTo("y@dest.test"))
	}
	if p := got.Pending(); len(p) != 1 || p[0] != "z@dest.test" {
		t.Errorf("pending %v, want z alone", p)
	}
	if _, err := q.BeginRelease(ctx, rec.ID, "b", "BCOPY00000000002", []string{"x@dest.test"}); !errors.Is(err, state.ErrAlreadyReleased) {
		t.Errorf("x released again from the store: %v", err)
	}
}

// TestSettleUnknownReleases: a release under way under this node's name
// that its journal does not know is ended once it is old enough (a crash
// before the journal was written), and left alone while fresh (a clone's,
// under the same name, not yet found by the heartbeats); a journal entry
// whose release the store no longer has under way (the node was taken out
// of the cluster meanwhile) is dropped, and the entries after it are still
// told to the store.
func TestSettleUnknownReleases(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	a := newNode(t, url, "a")
	ctx, q := context.Background(), a.store.Quarantine()
	put := func(id string) {
		t.Helper()
		rec := &state.QuarantineRecord{ID: id, From: "s@sender.test", Rcpts: []string{"r@dest.test"}, Time: time.Now().UTC()}
		if err := q.Put(ctx, rec, strings.NewReader("Subject: held\r\n\r\nbody\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	releasing := func(id string) string {
		t.Helper()
		rec, err := q.Get(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return rec.Releasing
	}
	put("FRESH00000000001")
	if _, err := q.BeginRelease(ctx, "FRESH00000000001", "a", "CLONECOPY0000001", nil); err != nil {
		t.Fatal(err)
	}
	if err := a.q.Recover(ctx, a.sp); err != nil {
		t.Fatal(err)
	}
	if got := releasing("FRESH00000000001"); got != "CLONECOPY0000001" {
		t.Fatalf("a fresh release under way that the journal does not know was ended (releasing %q)", got)
	}
	a.q.settleAfter = 0
	if err := a.q.Recover(ctx, a.sp); err != nil {
		t.Fatal(err)
	}
	if got := releasing("FRESH00000000001"); got != "" {
		t.Fatalf("an old release under way that the journal does not know is still under way (%q)", got)
	}

	// Two journal entries: the first's release was ended from elsewhere.
	for _, id := range []string{"GONE000000000001", "KEPT000000000001"} {
		put(id)
		if _, err := q.BeginRelease(ctx, id, "a", "COPYOF"+id[:10], nil); err != nil {
			t.Fatal(err)
		}
		queued := true
		if err := a.q.journal(id, "COPYOF"+id[:10], &queued); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.EndRelease(ctx, "GONE000000000001", "COPYOFGONE000000", false); err != nil {
		t.Fatal(err)
	}
	if err := a.q.Recover(ctx, a.sp); err != nil {
		t.Fatal(err)
	}
	entries, err := a.q.journalEntries()
	if err != nil || len(entries) != 0 {
		t.Errorf("journal after settling: %v, %v; want it empty", entries, err)
	}
	if rec, err := q.Get(ctx, "KEPT000000000001"); err != nil || rec.Released != "COPYOFKEPT000000" {
		t.Errorf("the entry after the dropped one: %+v, %v; want released as COPYOFKEPT000000", rec, err)
	}
}
