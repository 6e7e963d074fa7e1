// Package statetest is the conformance suite of package state: what every
// implementation of state.Store must do, written once and run against each
// (the embedded SQLite store and PostgreSQL), so that a single node and a
// cluster behave alike. An implementation's test calls Run.
package statetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// NewDB makes an empty database for one test and returns how to open a
// store on it as a node. Two stores opened on one database are two nodes
// sharing it: what one writes, the other reads. Stores are closed when the
// test ends.
type NewDB func(t *testing.T) (open func(t *testing.T, node string) state.Store)

// Run runs the conformance suite against the stores newDB opens.
func Run(t *testing.T, newDB NewDB) {
	tests := []struct {
		name string
		fn   func(*testing.T, func(*testing.T, string) state.Store)
	}{
		{"QuarantinePutGet", testQuarantinePutGet},
		{"QuarantineList", testQuarantineList},
		{"QuarantineDelete", testQuarantineDelete},
		{"ReleaseExactlyOnce", testReleaseExactlyOnce},
		{"ReleaseAbortAndRecover", testReleaseAbortAndRecover},
		{"ReleaseSomeRecipients", testReleaseSomeRecipients},
		{"ReleaseSomeRecipientsRace", testReleaseSomeRecipientsRace},
		{"TraceFind", testTraceFind},
		{"TraceSearch", testTraceSearch},
		{"TraceAppendAgain", testTraceAppendAgain},
		{"Lists", testLists},
		{"DMARC", testDMARC},
		{"Audit", testAudit},
		{"Nodes", testNodes},
		{"NodeNameClash", testNodeNameClash},
		{"Revocations", testRevocations},
		{"Claims", testClaims},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newDB(t))
		})
	}
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return c
}

// base is a fixed time, to the microsecond as stores keep times.
var base = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)

func record(id string, at time.Time) *state.QuarantineRecord {
	return &state.QuarantineRecord{
		ID:         id,
		MessageID:  "<" + id + "@example.org>",
		From:       "Sender@example.org",
		Rcpts:      []string{"boss@example.test", "team@example.test"},
		ClientAddr: "192.0.2.1",
		ClientHelo: "mail.example.org",
		Time:       at,
		Score:      12.5,
		Reason:     "score 12.5 >= quarantine_score 10",
		Policy:     "policy",
		Verdicts: []trace.Stage{
			{Name: "spf", Kind: "spf", Phase: "mail", Action: stages.Continue, Result: "pass", DurationMS: 1.5},
			{Name: "spam", Kind: "spam", Phase: "data", Action: stages.Tag, Score: 12.5, Result: "spam", DurationMS: 20},
		},
	}
}

func put(t *testing.T, q state.Quarantine, rec *state.QuarantineRecord, msg []byte) {
	t.Helper()
	if err := q.Put(ctx(t), rec, bytes.NewReader(msg)); err != nil {
		t.Fatalf("Put %s: %v", rec.ID, err)
	}
}

func message(t *testing.T, q state.Quarantine, id string) []byte {
	t.Helper()
	r, err := q.Message(ctx(t), id)
	if err != nil {
		t.Fatalf("Message %s: %v", id, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("Message %s: %v", id, err)
	}
	return b
}

// bigMessage is larger than a few parts of any reasonable part size, and
// not a multiple of a power of two.
func bigMessage(t *testing.T) []byte {
	body := make([]byte, 2<<20+12345)
	rand.Read(body)
	return append([]byte("Subject: big\r\n\r\n"), body...)
}

func testQuarantinePutGet(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a"), open(t, "node-b")
	msg := bigMessage(t)
	rec := record("0A1B2C3D4E5F", base)
	put(t, a.Quarantine(), rec, msg)
	if rec.Size != int64(len(msg)) || rec.Node != "node-a" {
		t.Errorf("after Put: size %d node %q, want %d node-a", rec.Size, rec.Node, len(msg))
	}

	// Node b sees what node a quarantined: record and bytes.
	got, err := b.Quarantine().Get(ctx(t), rec.ID)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(got) != fmt.Sprint(rec) || !got.Time.Equal(base) {
		t.Errorf("Get:\n got %+v\nwant %+v", got, rec)
	}
	if got := message(t, b.Quarantine(), rec.ID); !bytes.Equal(got, msg) {
		t.Errorf("Message: %d bytes differ from the %d put", len(got), len(msg))
	}
	small := record("0A1B2C3D4E60", base)
	put(t, a.Quarantine(), small, nil)
	if got := message(t, b.Quarantine(), small.ID); len(got) != 0 || small.Size != 0 {
		t.Errorf("empty message: got %d bytes, size %d", len(got), small.Size)
	}

	err = b.Quarantine().Put(ctx(t), record(rec.ID, base), strings.NewReader("other"))
	if !errors.Is(err, state.ErrExists) {
		t.Errorf("second Put of %s: %v, want ErrExists", rec.ID, err)
	}
	if got := message(t, a.Quarantine(), rec.ID); !bytes.Equal(got, msg) {
		t.Error("a refused Put changed the message")
	}
	if _, err := a.Quarantine().Get(ctx(t), "NOSUCHID0000"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get of an unknown ID: %v, want ErrNotFound", err)
	}
	if _, err := a.Quarantine().Message(ctx(t), "NOSUCHID0000"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Message of an unknown ID: %v, want ErrNotFound", err)
	}
}

func ids(recs []*state.QuarantineRecord) []string {
	var out []string
	for _, r := range recs {
		out = append(out, r.ID)
	}
	return out
}

func testQuarantineList(t *testing.T, open func(*testing.T, string) state.Store) {
	q := open(t, "node-a").Quarantine()
	r1 := record("LIST00000001", base.Add(2*time.Hour)) // put first, quarantined last
	r2 := record("LIST00000002", base)
	r2.From, r2.Rcpts = "", []string{"Alice@Example.test"} // the null sender
	r3 := record("LIST00000003", base.Add(time.Hour))
	r3.From = "100%_off@spam.example"
	r3.Stage, r3.Verdicts = "clamav", []trace.Stage{{Name: "clamav", Kind: "clamav", Phase: "data", Action: stages.Quarantine}}
	for _, r := range []*state.QuarantineRecord{r1, r2, r3} {
		put(t, q, r, []byte("Subject: x\r\n\r\nbody\r\n"))
	}
	for _, tc := range []struct {
		name string
		f    state.QuarantineFilter
		want []string
	}{
		{"all, oldest first", state.QuarantineFilter{}, []string{r2.ID, r3.ID, r1.ID}},
		{"from, any case", state.QuarantineFilter{From: "SENDER@"}, []string{r1.ID}},
		{"from with LIKE's own characters", state.QuarantineFilter{From: "100%_off"}, []string{r3.ID}},
		{"% is no wildcard", state.QuarantineFilter{From: "1%f"}, nil},
		{"rcpt, any of them", state.QuarantineFilter{Rcpt: "team@"}, []string{r3.ID, r1.ID}},
		{"rcpt, any case", state.QuarantineFilter{Rcpt: "alice@example.TEST"}, []string{r2.ID}},
		{"rcpt within one recipient", state.QuarantineFilter{Rcpt: "test\nteam"}, nil},
		{"stage that decided", state.QuarantineFilter{Stage: "clamav"}, []string{r3.ID}},
		{"stage that scored", state.QuarantineFilter{Stage: "spam"}, []string{r2.ID, r1.ID}},
		{"stage that only continued", state.QuarantineFilter{Stage: "spf"}, nil},
		{"stage name is whole", state.QuarantineFilter{Stage: "spa"}, nil},
		{"since", state.QuarantineFilter{Since: base.Add(time.Hour)}, []string{r3.ID, r1.ID}},
		{"until", state.QuarantineFilter{Until: base.Add(time.Hour)}, []string{r2.ID}},
		{"since and rcpt", state.QuarantineFilter{Since: base.Add(time.Minute), Rcpt: "boss"}, []string{r3.ID, r1.ID}},
	} {
		got, err := q.List(ctx(t), tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(ids(got), tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, ids(got), tc.want)
		}
	}
}

func testQuarantineDelete(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a"), open(t, "node-b")
	msg := bigMessage(t)
	put(t, a.Quarantine(), record("DEL000000001", base), msg)

	// A reader half way through a message the other node deletes fails;
	// it never returns the rest as if it were the end.
	r, err := a.Quarantine().Message(ctx(t), "DEL000000001")
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if _, err := io.ReadFull(r, make([]byte, 1000)); err != nil {
		t.Fatal(err)
	}
	if err := b.Quarantine().Delete(ctx(t), "DEL000000001"); err != nil {
		t.Fatal(err)
	}
	if n, err := io.Copy(io.Discard, r); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("reading on after a delete: %d bytes, %v; want ErrNotFound", n, err)
	}
	if _, err := a.Quarantine().Get(ctx(t), "DEL000000001"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("Get after Delete: %v, want ErrNotFound", err)
	}
	if err := a.Quarantine().Delete(ctx(t), "DEL000000001"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	// The ID is free again, with nothing left of the old message.
	put(t, a.Quarantine(), record("DEL000000001", base), []byte("new"))
	if got := message(t, b.Quarantine(), "DEL000000001"); string(got) != "new" {
		t.Errorf("message put after delete: %q", got)
	}
}

// testReleaseExactlyOnce has nodes release the same messages at the same
// moment: for each message exactly one wins, and every other attempt is
// told the message is being released or was released.
func testReleaseExactlyOnce(t *testing.T, open func(*testing.T, string) state.Store) {
	nodes := []state.Store{open(t, "node-a"), open(t, "node-b")}
	const messages, perNode = 10, 3
	for m := range messages {
		put(t, nodes[0].Quarantine(), record(fmt.Sprintf("REL%09d", m), base), []byte("x"))
	}
	for m := range messages {
		id := fmt.Sprintf("REL%09d", m)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			winners []string
			errs    []error
		)
		for n, st := range nodes {
			for i := range perNode {
				node, copyID := fmt.Sprintf("node-%c", 'a'+n), fmt.Sprintf("COPY%c%02d%05d", 'A'+n, i, m)
				wg.Go(func() {
					<-start
					_, err := st.Quarantine().BeginRelease(ctx(t), id, node, copyID, nil)
					if err == nil {
						err = st.Quarantine().EndRelease(ctx(t), id, copyID, true)
						if err != nil {
							err = fmt.Errorf("EndRelease: %w", err)
						}
					}
					mu.Lock()
					defer mu.Unlock()
					if err == nil {
						winners = append(winners, copyID)
					} else {
						errs = append(errs, err)
					}
				})
			}
		}
		close(start)
		wg.Wait()
		if len(winners) != 1 {
			t.Fatalf("%s: %d releases won (%v), want exactly 1; errors: %v", id, len(winners), winners, errs)
		}
		for _, err := range errs {
			if !errors.Is(err, state.ErrReleasing) && !errors.Is(err, state.ErrAlreadyReleased) {
				t.Errorf("%s: a losing release: %v, want ErrReleasing or ErrAlreadyReleased", id, err)
			}
		}
		rec, err := nodes[1].Quarantine().Get(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if rec.Released != winners[0] || rec.Releasing != "" || rec.ReleasedAt.IsZero() {
			t.Errorf("%s after release: released %q releasing %q at %v, want released %q", id, rec.Released, rec.Releasing, rec.ReleasedAt, winners[0])
		}
		// Later, a release is refused naming the copy that was queued.
		_, err = nodes[0].Quarantine().BeginRelease(ctx(t), id, "node-a", "COPYLATE0000", nil)
		if !errors.Is(err, state.ErrAlreadyReleased) || !strings.Contains(err.Error(), winners[0]) {
			t.Errorf("%s: release after release: %v, want ErrAlreadyReleased naming %s", id, err, winners[0])
		}
	}
	if _, err := nodes[0].Quarantine().BeginRelease(ctx(t), "NOSUCHID0000", "node-a", "COPY00000000", nil); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("release of an unknown ID: %v, want ErrNotFound", err)
	}
}

// testReleaseAbortAndRecover follows the release steps one by one, as
// crashes and failures leave them.
func testReleaseAbortAndRecover(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Quarantine(), open(t, "node-b").Quarantine()
	put(t, a, record("ABORT0000001", base), []byte("x"))
	put(t, a, record("ABORT0000002", base.Add(time.Second)), []byte("y"))

	// The spool could not commit the copy: the message is free again.
	rec, err := b.BeginRelease(ctx(t), "ABORT0000001", "node-b", "COPY00000001", nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec.ID != "ABORT0000001" || rec.Releasing != "COPY00000001" || rec.ReleaseNode != "node-b" || !slices.Equal(rec.Rcpts, record("", base).Rcpts) {
		t.Errorf("BeginRelease returned %+v", rec)
	}
	if _, err := a.BeginRelease(ctx(t), "ABORT0000001", "node-a", "COPY00000002", nil); !errors.Is(err, state.ErrReleasing) || !strings.Contains(err.Error(), "node-b") {
		t.Errorf("release during a release: %v, want ErrReleasing naming node-b", err)
	}
	if err := b.EndRelease(ctx(t), "ABORT0000001", "COPY00000001", false); err != nil {
		t.Fatal(err)
	}
	if err := b.EndRelease(ctx(t), "ABORT0000001", "COPY00000001", false); err != nil {
		t.Errorf("ending an aborted release again: %v", err)
	}
	if _, err := a.BeginRelease(ctx(t), "ABORT0000001", "node-a", "COPY00000002", nil); err != nil {
		t.Fatalf("release after an aborted one: %v", err)
	}
	if err := a.EndRelease(ctx(t), "ABORT0000001", "COPY00000001", true); err == nil {
		t.Error("ending a release that is not under way succeeded")
	}

	// Node b crashes between the steps of another release; started
	// again, it finds its releases under way, and only its own.
	if _, err := b.BeginRelease(ctx(t), "ABORT0000002", "node-b", "COPY00000003", nil); err != nil {
		t.Fatal(err)
	}
	for node, want := range map[string][]string{"node-a": {"ABORT0000001"}, "node-b": {"ABORT0000002"}, "node-c": nil} {
		got, err := a.List(ctx(t), state.QuarantineFilter{ReleasingOn: node})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(ids(got), want) {
			t.Errorf("releases under way on %s: %v, want %v", node, ids(got), want)
		}
	}
	// Its spool holds the copy: the release is done, once even if
	// recovery runs twice.
	for range 2 {
		if err := b.EndRelease(ctx(t), "ABORT0000002", "COPY00000003", true); err != nil {
			t.Fatal(err)
		}
	}
	if got, _ := a.List(ctx(t), state.QuarantineFilter{ReleasingOn: "node-b"}); len(got) != 0 {
		t.Errorf("after recovery, still under way on node-b: %v", ids(got))
	}
	if err := b.EndRelease(ctx(t), "ABORT0000002", "COPY00000003", false); err == nil {
		t.Error("aborting a release that was done succeeded")
	}
}

// testReleaseSomeRecipients releases a message to some of its
// recipients, then to the rest, from two nodes: each recipient once.
func testReleaseSomeRecipients(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Quarantine(), open(t, "node-b").Quarantine()
	rec := record("SOME00000001", base)
	rec.Rcpts = []string{"a@dest.test", "B@dest.test", "c@dest.test"}
	put(t, a, rec, []byte("x"))
	get := func() *state.QuarantineRecord {
		t.Helper()
		r, err := b.Get(ctx(t), rec.ID)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}

	// To one recipient, named in another case: the copy goes to the
	// address as the message has it.
	got, err := a.BeginRelease(ctx(t), rec.ID, "node-a", "COPY00000001", []string{"b@dest.test"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.ReleasingTo(), []string{"B@dest.test"}) || got.Releasing != "COPY00000001" {
		t.Fatalf("BeginRelease to b: releasing %q to %v, want COPY00000001 to B@dest.test", got.Releasing, got.ReleasingTo())
	}
	// Another release of the message waits for this one to end.
	if _, err := b.BeginRelease(ctx(t), rec.ID, "node-b", "COPY00000002", []string{"a@dest.test"}); !errors.Is(err, state.ErrReleasing) ||
		!strings.Contains(err.Error(), "node-a") || !strings.Contains(err.Error(), "B@dest.test") {
		t.Errorf("release during a partial one: %v, want ErrReleasing naming node-a and B@dest.test", err)
	}
	if r := get(); !slices.Equal(r.ReleasingTo(), []string{"B@dest.test"}) {
		t.Errorf("record during the release: releasing to %v, want B@dest.test", r.ReleasingTo())
	}
	if err := a.EndRelease(ctx(t), rec.ID, "COPY00000001", true); err != nil {
		t.Fatal(err)
	}
	r := get()
	if r.Released != "" || r.Releasing != "" || r.ReleasedTo("b@dest.test") != "COPY00000001" || !slices.Equal(r.Pending(), []string{"a@dest.test", "c@dest.test"}) {
		t.Fatalf("after the release to b: %+v", r)
	}

	// A release naming b again is refused as a whole, naming b, and
	// leaves nothing under way.
	_, err = b.BeginRelease(ctx(t), rec.ID, "node-b", "COPY00000002", []string{"c@dest.test", "B@dest.test"})
	if !errors.Is(err, state.ErrAlreadyReleased) || !strings.Contains(err.Error(), "B@dest.test") || !strings.Contains(err.Error(), "COPY00000001") {
		t.Errorf("release to c and b again: %v, want ErrAlreadyReleased naming B@dest.test and COPY00000001", err)
	}
	if _, err := b.BeginRelease(ctx(t), rec.ID, "node-b", "COPY00000002", []string{"x@other.test"}); !errors.Is(err, state.ErrNotRecipient) {
		t.Errorf("release to a stranger: %v, want ErrNotRecipient", err)
	}
	if r := get(); r.Releasing != "" || len(r.Releases) != 1 {
		t.Errorf("after refused releases: %+v", r)
	}

	// The rest, from node b: first its spool fails, then it works.
	for i, queued := range []bool{false, true} {
		copyID := fmt.Sprintf("COPY0000000%d", 3+i)
		got, err := b.BeginRelease(ctx(t), rec.ID, "node-b", copyID, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(got.ReleasingTo(), []string{"a@dest.test", "c@dest.test"}) {
			t.Errorf("release of the rest to %v, want a and c", got.ReleasingTo())
		}
		if err := b.EndRelease(ctx(t), rec.ID, copyID, queued); err != nil {
			t.Fatal(err)
		}
	}
	r = get()
	if r.Released != "COPY00000004" || r.ReleaseNode != "node-b" || r.ReleasedAt.IsZero() || len(r.Pending()) != 0 || len(r.Releases) != 2 ||
		r.ReleasedTo("a@dest.test") != "COPY00000004" || r.ReleasedTo("b@dest.test") != "COPY00000001" {
		t.Fatalf("after the release of the rest: %+v", r)
	}
	// Ending the first again (a node's recovery) changes nothing.
	if err := a.EndRelease(ctx(t), rec.ID, "COPY00000001", true); err != nil {
		t.Errorf("ending the first release again: %v", err)
	}
	for _, rcpts := range [][]string{nil, {"c@dest.test"}} {
		if _, err := a.BeginRelease(ctx(t), rec.ID, "node-a", "COPY00000005", rcpts); !errors.Is(err, state.ErrAlreadyReleased) {
			t.Errorf("release to %v of a released message: %v, want ErrAlreadyReleased", rcpts, err)
		}
	}
}

// testReleaseSomeRecipientsRace has two nodes release overlapping sets
// of recipients of the same messages at the same moment: each recipient
// is released once, and a release refused for one of its recipients
// releases none.
func testReleaseSomeRecipientsRace(t *testing.T, open func(*testing.T, string) state.Store) {
	nodes := []state.Store{open(t, "node-a"), open(t, "node-b")}
	rcpts := []string{"r0@dest.test", "r1@dest.test", "r2@dest.test", "r3@dest.test"}
	const messages, perNode = 5, 3
	for m := range messages {
		rec := record(fmt.Sprintf("SOMERACE%04d", m), base)
		rec.Rcpts = rcpts
		put(t, nodes[0].Quarantine(), rec, []byte("x"))
	}
	for m := range messages {
		id := fmt.Sprintf("SOMERACE%04d", m)
		var (
			wg      sync.WaitGroup
			start   = make(chan struct{})
			mu      sync.Mutex
			copies  = map[string][]string{} // copy → its recipients
			refused int
		)
		for n, st := range nodes {
			for i := range perNode {
				g := n*perNode + i
				node, copyID := fmt.Sprintf("node-%c", 'a'+n), fmt.Sprintf("COPY%c%02d%05d", 'A'+n, i, m)
				want := []string{rcpts[g%4], rcpts[(g+1)%4]}
				wg.Go(func() {
					<-start
					for {
						rec, err := st.Quarantine().BeginRelease(ctx(t), id, node, copyID, want)
						if errors.Is(err, state.ErrReleasing) && ctx(t).Err() == nil {
							continue // another release of the message is under way: try again
						}
						if err == nil {
							err = st.Quarantine().EndRelease(ctx(t), id, copyID, true)
						}
						mu.Lock()
						defer mu.Unlock()
						switch {
						case err == nil:
							copies[copyID] = rec.ReleasingTo()
						case errors.Is(err, state.ErrAlreadyReleased):
							refused++
						default:
							t.Errorf("%s: release to %v: %v", id, want, err)
						}
						return
					}
				})
			}
		}
		close(start)
		wg.Wait()
		rec, err := nodes[1].Quarantine().Get(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]string{}
		for copyID, to := range copies {
			for _, a := range to {
				if seen[a] != "" {
					t.Errorf("%s: %s released twice, as %s and %s", id, a, seen[a], copyID)
				}
				seen[a] = copyID
			}
		}
		for _, a := range rcpts {
			if got := rec.ReleasedTo(a); got != seen[a] && !(rec.Released == seen[a] && len(rec.Releases) == 0) {
				t.Errorf("%s: record has %s released as %q, the releases made %q", id, a, got, seen[a])
			}
		}
		if len(copies) == 0 || len(copies)+refused != 2*perNode || rec.Releasing != "" {
			t.Errorf("%s: %d releases done, %d refused, releasing %q; want every attempt to end, at least one done", id, len(copies), refused, rec.Releasing)
		}
	}
}

func sp(s string) *string { return &s }

func queueIDs(events []trace.Event) []string {
	var out []string
	for _, e := range events {
		out = append(out, e.QueueID+"/"+e.Event)
	}
	return out
}

func testTraceFind(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Traces(), open(t, "node-b").Traces()
	at := func(s int) time.Time { return base.Add(time.Duration(s) * time.Second) }
	// A message quarantined on node a and released on node b as a copy;
	// the copy bounced (a DSN); another message meanwhile.
	err := a.Append(ctx(t),
		trace.Event{Time: at(0), QueueID: "ORIG00000001", Event: "connect", Client: "192.0.2.1", From: sp("s@example.org")},
		trace.Event{Time: at(1), QueueID: "ORIG00000001", MessageID: "<m1@example.org>", Event: "data", Action: "quarantine", Score: 12,
			Stages: []trace.Stage{{Name: "spam", Kind: "spam", Phase: "data", Action: stages.Tag, Score: 12}}},
		trace.Event{Time: at(1), QueueID: "OTHER0000001", MessageID: "<m2@example.org>", Event: "data", Action: "accept"},
	)
	if err != nil {
		t.Fatal(err)
	}
	err = b.Append(ctx(t),
		trace.Event{Time: at(5), QueueID: "ORIG00000001", Event: "released", Related: "COPY00000001"},
		trace.Event{Time: at(5), QueueID: "COPY00000001", MessageID: "<m1@example.org>", Event: "data", Related: "ORIG00000001"},
		trace.Event{Time: at(6), QueueID: "COPY00000001", Event: "attempt", Action: "bounced", Related: "DSN000000001"},
		trace.Event{Time: at(7), QueueID: "DSN000000001", Event: "dsn"},
	)
	if err != nil {
		t.Fatal(err)
	}
	// Whichever of them is asked for, the whole story: the copy links
	// back to its original and on to its DSN.
	want := []string{"ORIG00000001/connect", "ORIG00000001/data", "ORIG00000001/released", "COPY00000001/data", "COPY00000001/attempt", "DSN000000001/dsn"}
	for _, id := range []string{"ORIG00000001", "<m1@example.org>", "m1@example.org", "COPY00000001"} {
		got, err := b.Find(ctx(t), id)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(queueIDs(got), want) {
			t.Errorf("Find(%s):\n got %v\nwant %v", id, queueIDs(got), want)
		}
	}
	got, err := a.Find(ctx(t), "ORIG00000001")
	if err != nil {
		t.Fatal(err)
	}
	if d := got[1]; d.Score != 12 || len(d.Stages) != 1 || d.Stages[0].Name != "spam" || !d.Time.Equal(at(1)) || *got[0].From != "s@example.org" {
		t.Errorf("event read back: %+v", d)
	}
	// Each event says which node recorded it.
	var nodes []string
	for _, e := range got {
		nodes = append(nodes, e.Node)
	}
	if want := []string{"node-a", "node-a", "node-b", "node-b", "node-b", "node-b"}; !slices.Equal(nodes, want) {
		t.Errorf("the events' nodes: %v, want %v", nodes, want)
	}
	if got, err := a.Find(ctx(t), "NOSUCHID0000"); err != nil || len(got) != 0 {
		t.Errorf("Find of an unknown ID: %v, %v", queueIDs(got), err)
	}
}

// testTraceAppendAgain: a batch sent again (a shipper that crashed before
// it noted the batch sent, an import run twice) is stored once; an event
// that differs in any field is another event.
func testTraceAppendAgain(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Traces(), open(t, "node-b").Traces()
	batch := []trace.Event{
		{Time: base, QueueID: "AGAIN0000001", Event: "connect", Client: "192.0.2.1"},
		{Time: base.Add(time.Second), QueueID: "AGAIN0000001", Event: "data", Action: "accept"},
	}
	for range 2 {
		if err := a.Append(ctx(t), batch...); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Append(ctx(t), append(batch, trace.Event{Time: base.Add(time.Second), QueueID: "AGAIN0000001", Event: "data", Action: "reject"})...); err != nil {
		t.Fatal(err)
	}
	got, err := a.Find(ctx(t), "AGAIN0000001")
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 {
		t.Fatalf("%d events after the batch was appended three times and one event more; want 3: %v", len(got), queueIDs(got))
	}
}

func testTraceSearch(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Traces(), open(t, "node-b").Traces()
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	if err := a.Append(ctx(t),
		trace.Event{Time: at(0), QueueID: "S00000000001", Event: "connect", From: sp("Alice@Example.org")},
		trace.Event{Time: at(1), QueueID: "S00000000001", Event: "rcpt", Rcpts: []string{"boss@example.test"}},
		trace.Event{Time: at(2), QueueID: "S00000000001", Event: "data", Action: "reject"},
	); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(ctx(t),
		trace.Event{Time: at(3), QueueID: "S00000000002", Event: "connect", From: sp("bob@example.net")},
		trace.Event{Time: at(4), QueueID: "S00000000002", Event: "data", Action: "accept"},
	); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		f    state.TraceFilter
		want []string
	}{
		{"all, newest first", state.TraceFilter{}, []string{"S00000000002/data", "S00000000002/connect", "S00000000001/data", "S00000000001/rcpt", "S00000000001/connect"}},
		{"limit", state.TraceFilter{Limit: 2}, []string{"S00000000002/data", "S00000000002/connect"}},
		{"from, any case", state.TraceFilter{From: "alice@example.ORG"}, []string{"S00000000001/connect"}},
		{"rcpt", state.TraceFilter{Rcpt: "boss"}, []string{"S00000000001/rcpt"}},
		{"action", state.TraceFilter{Action: "reject"}, []string{"S00000000001/data"}},
		{"event", state.TraceFilter{Event: "data"}, []string{"S00000000002/data", "S00000000001/data"}},
		{"node", state.TraceFilter{Node: "node-b"}, []string{"S00000000002/data", "S00000000002/connect"}},
		{"time", state.TraceFilter{Since: at(1), Until: at(3)}, []string{"S00000000001/data", "S00000000001/rcpt"}},
	} {
		got, err := a.Search(ctx(t), tc.f)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !slices.Equal(queueIDs(got), tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, queueIDs(got), tc.want)
		}
	}
	n, err := b.Expire(ctx(t), at(2))
	if err != nil || n != 2 {
		t.Errorf("Expire: %d, %v; want 2 events deleted", n, err)
	}
	if got, _ := a.Search(ctx(t), state.TraceFilter{}); len(got) != 3 {
		t.Errorf("after Expire: %v", queueIDs(got))
	}
}

func entries(es []state.ListEntry) []string {
	var out []string
	for _, e := range es {
		out = append(out, e.Owner+" "+string(e.Kind)+" "+e.Sender+" "+e.By)
	}
	return out
}

func testLists(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Lists(), open(t, "node-b").Lists()
	for _, e := range []state.ListEntry{
		{Owner: "Boss@Example.TEST", Kind: state.Allow, Sender: "Partner@Example.org", By: "boss"},
		{Owner: "boss@example.test", Kind: state.Block, Sender: "@spam.example", By: "boss"},
		{Owner: "boss@example.test", Kind: state.Allow, Sender: "*.Bücher.example", By: "admin"},
		{Owner: "alice@example.test", Kind: state.Block, Sender: "news.example", By: "alice"},
		// Again, by someone else: one entry, updated.
		{Owner: "boss@example.test", Kind: state.Allow, Sender: "partner@example.org", By: "admin", Added: base},
	} {
		if err := a.Add(ctx(t), e); err != nil {
			t.Fatalf("Add %+v: %v", e, err)
		}
	}
	got, err := b.Entries(ctx(t), "BOSS@example.test")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{
		"boss@example.test allow *.xn--bcher-kva.example admin",
		"boss@example.test allow partner@example.org admin",
		"boss@example.test block spam.example boss",
	}
	if !slices.Equal(entries(got), want) {
		t.Errorf("Entries:\n got %q\nwant %q", entries(got), want)
	}
	if !got[1].Added.Equal(base) {
		t.Errorf("updated entry added at %v, want %v", got[1].Added, base)
	}
	if hit := state.MatchList(got, "info@spam.example"); hit == nil || hit.Kind != state.Block {
		t.Errorf("MatchList of a blocked domain: %+v", hit)
	}
	all, err := b.Entries(ctx(t), "")
	if err != nil || len(all) != 4 || all[0].Owner != "alice@example.test" {
		t.Errorf("every user's entries: %q, %v", entries(all), err)
	}

	if err := b.Remove(ctx(t), "boss@example.test", state.Block, "SPAM.example"); err != nil {
		t.Errorf("Remove: %v", err)
	}
	if err := b.Remove(ctx(t), "boss@example.test", state.Block, "spam.example"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	for _, bad := range []state.ListEntry{
		{Owner: "not-an-address", Kind: state.Allow, Sender: "a@example.org"},
		{Owner: "boss@example.test", Kind: "maybe", Sender: "a@example.org"},
		{Owner: "boss@example.test", Kind: state.Allow, Sender: "bad domain!"},
	} {
		if err := a.Add(ctx(t), bad); err == nil {
			t.Errorf("Add %+v: no error", bad)
		}
	}
}

func testDMARC(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").DMARC(), open(t, "node-b").DMARC()
	day1, day2 := base, base.Add(24*time.Hour)
	for i, r := range []state.DMARCRecord{
		{Time: day1, Domain: "example.org", Row: []byte(`{"n":1}`)},
		{Time: day2, Domain: "example.org", Row: []byte(`{"n":2}`)},
		{Time: day1.Add(time.Minute), Domain: "example.net", Row: []byte(`{"n":3}`)},
	} {
		st := a
		if i%2 == 1 {
			st = b
		}
		if err := st.Add(ctx(t), r); err != nil {
			t.Fatal(err)
		}
	}
	got, err := b.Day(ctx(t), day1.Add(3*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || string(got[0].Row) != `{"n":1}` || got[1].Domain != "example.net" || !got[0].Time.Equal(day1) {
		t.Errorf("Day: %+v", got)
	}

	// A record added again with its key (a node sending again what it
	// sent before a crash) is stored once; without a key, every time.
	for range 2 {
		for _, st := range []state.DMARCRecords{a, b} {
			if err := st.Add(ctx(t), state.DMARCRecord{Time: day2, Domain: "example.org", Row: []byte(`{"n":4}`), Key: "records/x.jsonl:0"}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got, _ := a.Day(ctx(t), day2); len(got) != 3 {
		t.Errorf("day 2 holds %d records; want 3: one, and one of each node's key sent twice", len(got))
	}

	if err := a.Expire(ctx(t), day2); err != nil {
		t.Fatal(err)
	}
	if got, _ := b.Day(ctx(t), day1); len(got) != 0 {
		t.Errorf("after Expire, day 1 holds %d records", len(got))
	}
	if got, _ := b.Day(ctx(t), day2); len(got) != 3 {
		t.Errorf("after Expire, day 2 holds %d records, want 3", len(got))
	}
}

// testClaims: of nodes claiming one thing at the same moment, one gets
// it, and gets it again when it asks again; the others never do.
func testClaims(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Claims(), open(t, "node-b").Claims()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var won []string
	for i, st := range []state.Claims{a, b, a, b, a, b} {
		node := fmt.Sprintf("node-%d", i)
		wg.Go(func() {
			ok, err := st.Claim(ctx(t), "digest/2025-03-01/bob@example.test", node)
			if err != nil {
				t.Error(err)
			}
			if ok {
				mu.Lock()
				won = append(won, node)
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if len(won) != 1 {
		t.Fatalf("claims of one thing: %v, want exactly 1", won)
	}
	for i, st := range []state.Claims{a, b} {
		if ok, err := st.Claim(ctx(t), "digest/2025-03-01/bob@example.test", won[0]); !ok || err != nil {
			t.Errorf("the winner asking again through store %d: %v, %v; want true", i, ok, err)
		}
		if ok, err := st.Claim(ctx(t), "digest/2025-03-01/bob@example.test", "node-z"); ok || err != nil {
			t.Errorf("another node asking later through store %d: %v, %v; want false", i, ok, err)
		}
	}
	if ok, err := b.Claim(ctx(t), "digest/2025-03-01/carol@example.test", "node-z"); !ok || err != nil {
		t.Errorf("a claim of another thing: %v, %v", ok, err)
	}
	if err := a.Expire(ctx(t), time.Now().Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	if ok, err := a.Claim(ctx(t), "digest/2025-03-01/carol@example.test", "node-y"); !ok || err != nil {
		t.Errorf("after Expire, the thing is free again: %v, %v", ok, err)
	}
}

func testAudit(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Audit(), open(t, "node-b").Audit()
	at := func(m int) time.Time { return base.Add(time.Duration(m) * time.Minute) }
	for i, e := range []state.AuditEntry{
		{Time: at(0), Actor: "admin", Action: "quarantine.release", Target: "ORIG00000001", Detail: "queued as COPY00000001"},
		{Time: at(1), Actor: "boss@example.test", Action: "list.add", Target: "allow partner@example.org"},
		{Time: at(2), Actor: "admin", Action: "quarantine.delete", Target: "ORIG00000002", Node: "node-z"},
	} {
		st := a
		if i == 1 {
			st = b
		}
		if err := st.Record(ctx(t), e); err != nil {
			t.Fatal(err)
		}
	}
	show := func(es []state.AuditEntry) []string {
		var out []string
		for _, e := range es {
			out = append(out, e.Node+" "+e.Actor+" "+e.Action+" "+e.Target)
		}
		return out
	}
	for _, tc := range []struct {
		name string
		f    state.AuditFilter
		want []string
	}{
		{"all, newest first", state.AuditFilter{}, []string{
			"node-z admin quarantine.delete ORIG00000002",
			"node-b boss@example.test list.add allow partner@example.org",
			"node-a admin quarantine.release ORIG00000001",
		}},
		{"actor", state.AuditFilter{Actor: "admin", Limit: 1}, []string{"node-z admin quarantine.delete ORIG00000002"}},
		{"target", state.AuditFilter{Target: "ORIG00000001"}, []string{"node-a admin quarantine.release ORIG00000001"}},
		{"action and time", state.AuditFilter{Action: "list.add", Since: at(1), Until: at(2)}, []string{"node-b boss@example.test list.add allow partner@example.org"}},
	} {
		got, err := a.Entries(ctx(t), tc.f)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(show(got), tc.want) {
			t.Errorf("%s:\n got %q\nwant %q", tc.name, show(got), tc.want)
		}
	}
	got, _ := b.Entries(ctx(t), state.AuditFilter{Target: "ORIG00000001"})
	if len(got) != 1 || got[0].Detail != "queued as COPY00000001" || !got[0].Time.Equal(at(0)) {
		t.Errorf("entry read back: %+v", got)
	}
}

func testNodes(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Nodes(), open(t, "node-b").Nodes()
	now := base.Add(time.Hour)
	beat := func(st state.Nodes, name, hash string, at time.Time) {
		t.Helper()
		_, err := st.Heartbeat(ctx(t), state.Node{Name: name, Version: "1.0", ConfigHash: hash, Health: "ok", Started: base, Heartbeat: at})
		if err != nil {
			t.Fatal(err)
		}
	}
	beat(a, "node-a", "h1", now.Add(-time.Minute)) // replaced below
	beat(a, "node-a", "h1", now)
	beat(b, "node-b", "h1", now.Add(-2*time.Second))
	beat(b, "node-c", "h2", now.Add(-time.Second))
	beat(a, "node-d", "h3", now.Add(-time.Hour)) // gone quiet
	list, err := b.List(ctx(t))
	if err != nil {
		t.Fatal(err)
	}
	state.NodeStatus(list, now, 30*time.Second)
	var got []string
	for _, n := range list {
		got = append(got, fmt.Sprintf("%s %s stale=%v differs=%v", n.Name, n.ConfigHash, n.Stale, n.ConfigDiffers))
	}
	want := []string{
		"node-a h1 stale=false differs=false",
		"node-b h1 stale=false differs=false",
		"node-c h2 stale=false differs=true",
		"node-d h3 stale=true differs=true",
	}
	if !slices.Equal(got, want) {
		t.Errorf("nodes:\n got %q\nwant %q", got, want)
	}
	if n := list[0]; !n.Heartbeat.Equal(now) || !n.Started.Equal(base) || n.Version != "1.0" || n.Health != "ok" {
		t.Errorf("node read back: %+v", n)
	}
	if err := a.Remove(ctx(t), "node-d"); err != nil {
		t.Fatal(err)
	}
	if err := a.Remove(ctx(t), "node-d"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("second Remove: %v, want ErrNotFound", err)
	}
	if list, _ := a.List(ctx(t)); len(list) != 3 {
		t.Errorf("after Remove: %d nodes, want 3", len(list))
	}
}

// testNodeNameClash: Heartbeat returns the row it replaced, so that
// NameWatch tells a restart from two live processes under one name: a
// new process whose first heartbeat replaces a fresh one of another
// instance is no clash once it finds its own next; two processes
// writing in turn both find the other, and the younger yields; the
// clash ends when the other has not written for StaleAfter.
func testNodeNameClash(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "mx").Nodes(), open(t, "mx").Nodes()
	stale := 30 * time.Second
	type proc struct {
		st      state.Nodes
		started time.Time
		w       *state.NameWatch
	}
	beat := func(p proc, at time.Time) (begun, ended bool) {
		t.Helper()
		n := state.Node{Name: "mx", Version: "1.0", Health: "ok", Started: p.started, Heartbeat: at}
		was, err := p.st.Heartbeat(ctx(t), n)
		if err != nil {
			t.Fatal(err)
		}
		return p.w.Beat(was, n)
	}
	if was, err := a.Heartbeat(ctx(t), state.Node{Name: "new", Started: base, Heartbeat: base}); err != nil || was.Name != "" {
		t.Fatalf("first heartbeat of a name returned %+v, %v; want the zero Node", was, err)
	}

	// A runs, is killed, and B takes over its name at once: a restart.
	old := proc{a, base, &state.NameWatch{StaleAfter: stale}}
	beat(old, base)
	beat(old, base.Add(5*time.Second))
	restarted := proc{b, base.Add(6 * time.Second), &state.NameWatch{StaleAfter: stale}}
	for i := range 3 {
		if begun, _ := beat(restarted, base.Add(time.Duration(7+5*i)*time.Second)); begun {
			t.Fatalf("heartbeat %d of a restarted node: a clash; want none", i)
		}
	}
	if _, _, clash := restarted.w.Clash(); clash || !restarted.w.Settled() || restarted.w.Yields() {
		t.Errorf("restarted node: clash %v, settled %v, yields %v; want no clash, settled", clash, restarted.w.Settled(), restarted.w.Yields())
	}

	// A process started later under the same name, both writing.
	older := restarted
	younger := proc{a, base.Add(20 * time.Second), &state.NameWatch{StaleAfter: stale}}
	if begun, _ := beat(younger, base.Add(21*time.Second)); begun {
		t.Fatal("a clash at the first heartbeat: it cannot tell a restart")
	}
	if begun, _ := beat(older, base.Add(22*time.Second)); !begun {
		t.Fatal("the older process does not find the younger's heartbeat")
	}
	if begun, _ := beat(younger, base.Add(26*time.Second)); !begun {
		t.Fatal("the younger process does not find the older's heartbeat")
	}
	for _, p := range []proc{older, younger} {
		other, _, clash := p.w.Clash()
		if !clash || other.Name != "mx" || p.w.Settled() {
			t.Errorf("process started %v: clash %v with %+v, settled %v; want the clash, not settled", p.started, clash, other, p.w.Settled())
		}
	}
	if other, _, _ := older.w.Clash(); !other.Started.Equal(younger.started) {
		t.Errorf("the older finds %+v; want the younger, started %v", other, younger.started)
	}
	if older.w.Yields() || !younger.w.Yields() {
		t.Errorf("yields: older %v, younger %v; want the younger only", older.w.Yields(), younger.w.Yields())
	}

	// The younger stops after its heartbeat at 26s, which the older
	// finds at 27s; the clash ends at the first heartbeat StaleAfter
	// after that.
	last := base.Add(27 * time.Second)
	for at := last; ; at = at.Add(5 * time.Second) {
		_, ended := beat(older, at)
		if ended != !at.Before(last.Add(stale)) {
			t.Fatalf("heartbeat %v after the clash was last found: ended %v", at.Sub(last), ended)
		}
		if ended {
			break
		}
	}
	if _, _, clash := older.w.Clash(); clash || !older.w.Settled() {
		t.Errorf("after the clash: clash %v, settled %v", clash, older.w.Settled())
	}
}

// testRevocations: a session revoked on one node is revoked on every
// other and after a restart (a store opened again), and forgotten once
// past its expiry; a recipient's link generation is raised once per
// RevokeLinks, whatever the spelling of the address and however many
// nodes raise it at the same moment.
func testRevocations(t *testing.T, open func(*testing.T, string) state.Store) {
	a, b := open(t, "node-a").Revocations(), open(t, "node-b").Revocations()
	later := time.Now().Add(time.Hour)
	if err := a.RevokeSession(ctx(t), "session-1", later); err != nil {
		t.Fatal(err)
	}
	if err := a.RevokeSession(ctx(t), "session-1", later); err != nil {
		t.Fatalf("revoked again: %v", err)
	}
	for name, st := range map[string]state.Revocations{"node-b": b, "node-a restarted": open(t, "node-a").Revocations()} {
		if ok, err := st.SessionRevoked(ctx(t), "session-1"); err != nil || !ok {
			t.Errorf("%s: SessionRevoked = %v, %v; want true", name, ok, err)
		}
		if ok, err := st.SessionRevoked(ctx(t), "session-2"); err != nil || ok {
			t.Errorf("%s: a session never revoked: %v, %v", name, ok, err)
		}
	}
	// One past its expiry is deleted at the next revocation.
	if err := b.RevokeSession(ctx(t), "session-old", time.Now().Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	if err := b.RevokeSession(ctx(t), "session-3", later); err != nil {
		t.Fatal(err)
	}
	if ok, _ := a.SessionRevoked(ctx(t), "session-old"); ok {
		t.Error("a revocation past its expiry is kept")
	}
	if ok, _ := a.SessionRevoked(ctx(t), "session-1"); !ok {
		t.Error("a revocation before its expiry was deleted")
	}

	if gen, err := a.LinkGeneration(ctx(t), "bob@example.test"); err != nil || gen != 0 {
		t.Fatalf("LinkGeneration before any revocation = %d, %v; want 0", gen, err)
	}
	if gen, err := a.RevokeLinks(ctx(t), "Bob@Example.TEST"); err != nil || gen != 1 {
		t.Fatalf("RevokeLinks = %d, %v; want 1", gen, err)
	}
	if gen, err := b.LinkGeneration(ctx(t), "bob@example.test"); err != nil || gen != 1 {
		t.Fatalf("LinkGeneration on the other node = %d, %v; want 1", gen, err)
	}
	var wg sync.WaitGroup
	for _, st := range []state.Revocations{a, b} {
		for range 5 {
			wg.Go(func() {
				if _, err := st.RevokeLinks(ctx(t), "bob@example.test"); err != nil {
					t.Error(err)
				}
			})
		}
	}
	wg.Wait()
	if gen, _ := a.LinkGeneration(ctx(t), "bob@example.test"); gen != 11 {
		t.Errorf("after 10 more RevokeLinks from two nodes: generation %d, want 11", gen)
	}
	if gen, _ := a.LinkGeneration(ctx(t), "carol@example.test"); gen != 0 {
		t.Errorf("another recipient's generation: %d, want 0", gen)
	}
	// The address is keyed as address.Equal compares: ASCII letters
	// without case, other characters as written.
	if _, err := a.RevokeLinks(ctx(t), "\u0130sam@example.test"); err != nil {
		t.Fatal(err)
	}
	for rcpt, want := range map[string]int64{"isam@example.test": 0, "\u017fam@example.test": 0, "\u0130SAM@EXAMPLE.test": 1} {
		if gen, err := b.LinkGeneration(ctx(t), rcpt); err != nil || gen != want {
			t.Errorf("after RevokeLinks of \u0130sam: generation of %s = %d, %v; want %d", rcpt, gen, err, want)
		}
	}
}
