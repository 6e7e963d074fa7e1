package quarantine

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state/trace"
)

// spooled writes msg as an uncommitted spool message and returns its ID
// and file, as smtpd has them when it quarantines.
func spooled(t *testing.T, sp *spool.Spool, msg string) *spool.Writer {
	t.Helper()
	w, err := sp.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(w, msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	return w
}

func open(t *testing.T) (*Store, *spool.Spool, string) {
	t.Helper()
	dir := t.TempDir()
	sp, err := spool.Open(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	q, err := Open(filepath.Join(dir, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	return q, sp, dir
}

func add(t *testing.T, q *Store, sp *spool.Spool, from, rcpt, stage string, at time.Time) *Record {
	t.Helper()
	w := spooled(t, sp, "Subject: hi\r\n\r\nbody of "+from+"\r\n")
	rec := &Record{ID: w.ID(), From: from, Rcpts: []string{rcpt}, Time: at, Stage: stage, Reason: "test",
		Verdicts: []trace.Stage{{Name: "spam", Phase: "data", Action: stages.Tag, Score: 6}}}
	if err := q.Add(context.Background(), rec, w.Path()); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// Records hold addresses as the SMTP side took them, in canonical form;
// a filter that is a whole address or domain finds them in any spelling.
func TestListFilterSpellings(t *testing.T) {
	q, sp, _ := open(t)
	now := time.Now()
	a := add(t, q, sp, "boss@xn--bcher-kva.test", "ceo@example.test", "", now)
	for _, f := range []Filter{
		{Rcpt: "ceo@example.test."},
		{Rcpt: "CEO@Example.TEST"},
		{Rcpt: "example.test."},
		{From: "bücher.test"},
		{From: "@BÜCHER.test."},
		{From: "boss@bücher.test"},
	} {
		recs, err := q.List(context.Background(), f, now)
		if err != nil || len(recs) != 1 || recs[0].ID != a.ID {
			t.Errorf("List(%+v) = %v, %v; want %s", f, recs, err, a.ID)
		}
	}
}

func TestAddListShowDelete(t *testing.T) {
	q, sp, _ := open(t)
	now := time.Now()
	a := add(t, q, sp, "alice@a.test", "x@dest.test", "av", now.Add(-48*time.Hour))
	b := add(t, q, sp, "bob@b.test", "y@dest.test", "", now.Add(-time.Hour))

	// The message outlives the spool file it came from.
	got, err := os.ReadFile(q.MessagePath(a.ID))
	if err != nil || string(got) != "Subject: hi\r\n\r\nbody of alice@a.test\r\n" {
		t.Fatalf("quarantined message %q, %v", got, err)
	}
	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{a.ID, b.ID}},
		{Filter{From: "ALICE"}, []string{a.ID}},
		{Filter{Rcpt: "y@"}, []string{b.ID}},
		{Filter{Stage: "av"}, []string{a.ID}},
		{Filter{Stage: "spam"}, []string{a.ID, b.ID}}, // a verdict other than continue
		{Filter{Stage: "nope"}, nil},
		{Filter{OlderThan: 24 * time.Hour}, []string{a.ID}},
		{Filter{NewerThan: 24 * time.Hour}, []string{b.ID}},
	} {
		recs, err := q.List(context.Background(), tc.f, now)
		if err != nil {
			t.Fatal(err)
		}
		var ids []string
		for _, r := range recs {
			ids = append(ids, r.ID)
		}
		if strings.Join(ids, ",") != strings.Join(tc.want, ",") {
			t.Errorf("List(%+v) = %v, want %v", tc.f, ids, tc.want)
		}
	}
	rec, err := q.Get(context.Background(), b.ID)
	if err != nil || rec.From != "bob@b.test" || len(rec.Verdicts) != 1 || rec.Verdicts[0].Score != 6 {
		t.Fatalf("Get: %+v, %v", rec, err)
	}
	if err := q.Delete(context.Background(), b.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := q.Get(context.Background(), b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get after Delete: %v", err)
	}
	if err := q.Delete(context.Background(), b.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second Delete: %v", err)
	}
	if _, err := os.Stat(q.MessagePath(b.ID)); !os.IsNotExist(err) {
		t.Fatalf("message file left after Delete: %v", err)
	}
}

func TestExpire(t *testing.T) {
	q, sp, _ := open(t)
	now := time.Now()
	old := add(t, q, sp, "old@a.test", "x@dest.test", "", now.Add(-31*24*time.Hour))
	fresh := add(t, q, sp, "new@a.test", "x@dest.test", "", now.Add(-time.Hour))
	ids, err := q.Expire(context.Background(), now, 720*time.Hour)
	if err != nil || len(ids) != 1 || ids[0] != old.ID {
		t.Fatalf("Expire = %v, %v; want [%s]", ids, err, old.ID)
	}
	if _, err := q.Get(context.Background(), fresh.ID); err != nil {
		t.Fatal(err)
	}
}

func TestReleaseOnce(t *testing.T) {
	q, sp, _ := open(t)
	rec := add(t, q, sp, "a@a.test", "x@dest.test", "", time.Now())
	env, err := q.Release(context.Background(), rec.ID, sp)
	if err != nil {
		t.Fatal(err)
	}
	queued, err := sp.Load(env.ID)
	if err != nil || queued.From != "a@a.test" || len(queued.Rcpts) != 1 || queued.Rcpts[0].Status != spool.Pending || queued.Held {
		t.Fatalf("queued copy %+v, %v", queued, err)
	}
	_, err = q.Release(context.Background(), rec.ID, sp)
	if !errors.Is(err, ErrAlreadyReleased) || !strings.Contains(err.Error(), env.ID) {
		t.Fatalf("second release: %v; want already released as %s", err, env.ID)
	}
	if list, _ := sp.List(); len(list) != 1 {
		t.Fatalf("%d messages in the spool after two releases, want 1", len(list))
	}
	got, _ := q.Get(context.Background(), rec.ID)
	if got.Released != env.ID || got.Releasing != "" || got.ReleasedAt.IsZero() {
		t.Fatalf("record after release: %+v", got)
	}
}

// TestRecover: a release interrupted before the copy was committed can be
// released again; one interrupted after is completed, not repeated.
func TestRecover(t *testing.T) {
	q, sp, dir := open(t)
	lost := add(t, q, sp, "a@a.test", "x@dest.test", "", time.Now())
	kept := add(t, q, sp, "b@a.test", "x@dest.test", "", time.Now())

	// lost: crash after step 1, the copy never committed.
	w, _ := sp.Create()
	rec, _ := q.Get(context.Background(), lost.ID)
	rec.Releasing = w.ID()
	if err := q.writeRecord(rec); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	// kept: crash after step 2.
	w2 := spooled(t, sp, "x")
	if err := w2.Commit(context.Background(), &spool.Envelope{From: "b@a.test", Rcpts: []spool.Recipient{{Addr: "x@dest.test", Status: spool.Pending}}}); err != nil {
		t.Fatal(err)
	}
	rec, _ = q.Get(context.Background(), kept.ID)
	rec.Releasing = w2.ID()
	if err := q.writeRecord(rec); err != nil {
		t.Fatal(err)
	}

	q2, err := Open(filepath.Join(dir, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Recover(context.Background(), sp); err != nil {
		t.Fatal(err)
	}
	if r, _ := q2.Get(context.Background(), lost.ID); r.Releasing != "" || r.Released != "" {
		t.Fatalf("uncommitted release not undone: %+v", r)
	}
	if _, err := q2.Release(context.Background(), lost.ID, sp); err != nil {
		t.Fatalf("release after an undone one: %v", err)
	}
	if r, _ := q2.Get(context.Background(), kept.ID); r.Released != w2.ID() || r.Releasing != "" {
		t.Fatalf("committed release not completed: %+v", r)
	}
	if _, err := q2.Release(context.Background(), kept.ID, sp); !errors.Is(err, ErrAlreadyReleased) {
		t.Fatalf("release after a completed one: %v", err)
	}
}

// TestOpenRemovesOrphans: a message file whose record never got written
// (a crash inside Add) is removed; nothing else is.
func TestOpenRemovesOrphans(t *testing.T) {
	q, sp, dir := open(t)
	rec := add(t, q, sp, "a@a.test", "x@dest.test", "", time.Now())
	orphan := filepath.Join(dir, "quarantine", "0000000000000000.eml")
	if err := os.WriteFile(orphan, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(filepath.Join(dir, "quarantine")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Fatalf("orphan kept: %v", err)
	}
	if _, err := os.Stat(q.MessagePath(rec.ID)); err != nil {
		t.Fatalf("quarantined message removed: %v", err)
	}
}

// TestReleaseSomeRecipients: a message for three is released to one,
// then to another, each once; the last release completes it, and every
// copy goes to its recipients only. A crash after a partial release's
// commit is completed by Recover for those recipients only.
func TestReleaseSomeRecipients(t *testing.T) {
	q, sp, dir := open(t)
	w := spooled(t, sp, "Subject: hi\r\n\r\nbody\r\n")
	rec := &Record{ID: w.ID(), From: "a@a.test", Rcpts: []string{"x@dest.test", "y@dest.test", "z@dest.test"}, Time: time.Now()}
	if err := q.Add(context.Background(), rec, w.Path()); err != nil {
		t.Fatal(err)
	}
	w.Abort()
	ctx := context.Background()
	rcptsOf := func(env *spool.Envelope) (out []string) {
		for _, r := range env.Rcpts {
			out = append(out, r.Addr)
		}
		return out
	}
	env, err := q.Release(ctx, rec.ID, sp, "Y@dest.test")
	if err != nil || strings.Join(rcptsOf(env), ",") != "y@dest.test" {
		t.Fatalf("release to y: %v %v", rcptsOf(env), err)
	}
	if _, err := q.Release(ctx, rec.ID, sp, "y@dest.test"); !errors.Is(err, ErrAlreadyReleased) || !strings.Contains(err.Error(), env.ID) {
		t.Fatalf("y again: %v", err)
	}
	if _, err := q.Release(ctx, rec.ID, sp, "nobody@dest.test"); !errors.Is(err, ErrNotRecipient) {
		t.Fatalf("a stranger: %v", err)
	}
	got, _ := q.Get(ctx, rec.ID)
	if got.Released != "" || strings.Join(got.Pending(), ",") != "x@dest.test,z@dest.test" {
		t.Fatalf("after one: released %q, pending %v", got.Released, got.Pending())
	}

	// z: a crash after the copy was committed, before the record said so.
	w2 := spooled(t, sp, "x")
	if err := w2.Commit(ctx, &spool.Envelope{From: "a@a.test", Rcpts: []spool.Recipient{{Addr: "z@dest.test", Status: spool.Pending}}}); err != nil {
		t.Fatal(err)
	}
	got.Releasing, got.ReleasingRcpts = w2.ID(), []string{"z@dest.test"}
	if err := q.writeRecord(got); err != nil {
		t.Fatal(err)
	}
	q2, err := Open(filepath.Join(dir, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	if err := q2.Recover(ctx, sp); err != nil {
		t.Fatal(err)
	}
	got, _ = q2.Get(ctx, rec.ID)
	if strings.Join(got.Pending(), ",") != "x@dest.test" || got.Releasing != "" {
		t.Fatalf("after recovery: pending %v, releasing %q", got.Pending(), got.Releasing)
	}
	// The rest: x only, and then the message is released.
	env, err = q2.Release(ctx, rec.ID, sp)
	if err != nil || strings.Join(rcptsOf(env), ",") != "x@dest.test" {
		t.Fatalf("release of the rest: %v %v", rcptsOf(env), err)
	}
	got, _ = q2.Get(ctx, rec.ID)
	if got.Released != env.ID || len(got.Pending()) != 0 || len(got.Releases) != 3 {
		t.Fatalf("after all: %+v", got)
	}
	if _, err := q2.Release(ctx, rec.ID, sp); !errors.Is(err, ErrAlreadyReleased) {
		t.Fatalf("a fourth release: %v", err)
	}
	if list, _ := sp.List(); len(list) != 3 {
		t.Fatalf("%d copies queued, want 3", len(list))
	}
}
