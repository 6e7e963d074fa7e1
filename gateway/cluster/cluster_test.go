package cluster

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// Heartbeats of the tests: StaleAfter is long beside them, so that a
// loaded machine that holds a process back for a while ends no clash.
const (
	testBeatEvery  = 50 * time.Millisecond
	testStaleAfter = 5 * time.Second
	waitLimit      = time.Minute
)

// logBuffer collects log output a test reads while it is written.
type logBuffer = testkit.SyncBuffer

// testNode is a process of a gateway as a node named name of the
// cluster whose PostgreSQL is at url, with its quarantine and spool.
type testNode struct {
	*Node
	log  *logBuffer
	sp   *spool.Spool
	stop func() // stops Run and waits for it to return
}

func openNode(t *testing.T, url, name, version string) *testNode {
	t.Helper()
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "trace"), 0o700); err != nil { // the gateway's trace files
		t.Fatal(err)
	}
	cfg := &policy.Config{Hostname: name + ".test", DataDir: dir, Cluster: policy.Cluster{Postgres: url, Node: name,
		Timeout: stages.Duration(5 * time.Second), ConnectTimeout: stages.Duration(5 * time.Second)}}
	tn := &testNode{log: &logBuffer{}}
	n, err := Open(context.Background(), cfg, slog.New(slog.NewTextHandler(tn.log, nil)), prometheus.NewRegistry(), version)
	if err != nil {
		t.Fatal(err)
	}
	n.beatEvery, n.names.StaleAfter = testBeatEvery, testStaleAfter
	tn.Node = n
	if _, err := n.OpenQuarantine(); err != nil {
		t.Fatal(err)
	}
	if tn.sp, err = spool.Open(filepath.Join(dir, "queue")); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if tn.stop != nil {
			tn.stop()
		}
		tn.sp.Close()
		n.Close()
	})
	return tn
}

// run runs the node until stop.
func (n *testNode) run() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		n.Run(ctx, func() (string, string) { return "hash", n.Engines().Summary() })
	}()
	n.stop = func() { cancel(); <-done; n.stop = nil }
}

// nameCheck returns the node's "node name" check, if Engines has one.
func (n *testNode) nameCheck() (admin.Check, bool) {
	for _, c := range n.Engines() {
		if c.Name == "node name" {
			return c, true
		}
	}
	return admin.Check{}, false
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting %v for %s", waitLimit, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	t.Cleanup(cancel)
	return ctx
}

// releaseUnderWay quarantines a message in the cluster's store and begins
// its release as node, as a process that has not ended it yet.
func releaseUnderWay(t *testing.T, st state.Store, node string) string {
	t.Helper()
	rec := &state.QuarantineRecord{ID: "HELD0000001", From: "s@sender.test", Rcpts: []string{"r@dest.test"}, Time: time.Now().UTC()}
	if err := st.Quarantine().Put(testCtx(t), rec, strings.NewReader("Subject: held\r\n\r\nbody\r\n")); err != nil {
		t.Fatal(err)
	}
	if _, err := st.Quarantine().BeginRelease(testCtx(t), rec.ID, node, "COPY0000001", nil); err != nil {
		t.Fatal(err)
	}
	return rec.ID
}

func releasing(t *testing.T, st state.Store, id string) string {
	t.Helper()
	rec, err := st.Quarantine().Get(testCtx(t), id)
	if err != nil {
		t.Fatal(err)
	}
	return rec.Releasing
}

// TestNodeNameClash: two live processes under one [cluster] node name
// (a cloned machine) both find the other: each logs an error naming it
// and saying what to do, and Engines says "node name: degraded". The
// younger claims nothing, without asking the store (a key it was asked
// for is the older's to claim after it), while the older keeps claiming.
// Neither ends the releases under way under the name that its journal
// does not know: they may be the other's. When the younger stops, the
// older ends the clash after StaleAfter, and ends those releases then.
func TestNodeNameClash(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	older := openNode(t, url, "mx", "v-older")
	older.run()
	waitUntil(t, "the older process to find its name its own", older.names.Settled)
	younger := openNode(t, url, "mx", "v-younger")
	younger.run()

	for _, c := range []struct {
		n     *testNode
		other string
	}{{older, "v-younger"}, {younger, "v-older"}} {
		waitUntil(t, "the process clashing with "+c.other+" to say so", func() bool { _, ok := c.n.nameCheck(); return ok })
		ch, _ := c.n.nameCheck()
		if ch.Status != admin.Degraded || !strings.Contains(ch.Detail, "version "+c.other) || !strings.Contains(ch.Detail, "give each node its own [cluster] node") {
			t.Errorf("check %+v; want degraded, naming %s and what to do", ch, c.other)
		}
		if log := c.n.log.String(); !strings.Contains(log, "level=ERROR") || !strings.Contains(log, "other_version="+c.other) ||
			!strings.Contains(log, "give each node its own [cluster] node") {
			t.Errorf("log of the process clashing with %s:\n%s", c.other, log)
		}
	}
	if older.names.Yields() || !younger.names.Yields() {
		t.Errorf("yields: older %v, younger %v; want the younger only", older.names.Yields(), younger.names.Yields())
	}
	claim := func(n *testNode, key string) bool {
		t.Helper()
		mine, err := n.Store().Claims().Claim(testCtx(t), key, "mx")
		if err != nil {
			t.Fatal(err)
		}
		return mine
	}
	// The younger's claim fails (its caller tries again later), and
	// writes nothing: the key stays the older's to claim.
	if mine, err := younger.Store().Claims().Claim(testCtx(t), "digest/first-asked-by-the-younger", "mx"); mine || err == nil ||
		!strings.Contains(err.Error(), "give each node its own [cluster] node") {
		t.Errorf("the younger process's claim: %v, %v; want an error saying what to do", mine, err)
	}
	if !claim(older, "digest/first-asked-by-the-younger") || !claim(older, "dmarc/2026-01-01") {
		t.Error("the older process does not claim")
	}
	if mine, err := younger.Store().Claims().Claim(testCtx(t), "dmarc/2026-01-01", "mx"); mine || err == nil {
		t.Errorf("the younger process's claim of what the older claimed: %v, %v", mine, err)
	}

	// A release under way under the name is left alone by both, at
	// start (Recover) and in every round, while both are live.
	id := releaseUnderWay(t, older.Store(), "mx")
	for _, n := range []*testNode{older, younger} {
		if err := n.quar.Recover(testCtx(t), n.sp); err != nil {
			t.Fatal(err)
		}
	}
	if got := releasing(t, older.Store(), id); got != "COPY0000001" {
		t.Fatalf("release under way ended (releasing %q) while two processes share the name", got)
	}

	younger.stop()
	waitUntil(t, "the older process to end the clash", func() bool { _, ok := older.nameCheck(); return !ok })
	if !strings.Contains(older.log.String(), "level=INFO msg=\"no other process reports under this node's name any more\"") {
		t.Errorf("the end of the clash is not logged:\n%s", older.log.String())
	}
	if !older.names.Settled() || older.names.Yields() {
		t.Errorf("after the clash: settled %v, yields %v", older.names.Settled(), older.names.Yields())
	}
	waitUntil(t, "the older process to end the release its journal does not know", func() bool {
		return releasing(t, older.Store(), id) == ""
	})
}

// TestNodeRestartIsNoClash: a process killed (no last heartbeat) and
// started again at once finds the row of its former self fresh: that is
// no clash. Until its next heartbeat finds the row as it left it, it
// leaves alone the release its former self had under way, and ends it
// then (its journal does not know it: the copy was never committed).
func TestNodeRestartIsNoClash(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	killed := openNode(t, url, "mx", "v1")
	for range 2 {
		killed.heartbeat(testCtx(t), "hash", "ok")
	}
	id := releaseUnderWay(t, killed.Store(), "mx")

	restarted := openNode(t, url, "mx", "v1")
	if err := restarted.quar.Recover(testCtx(t), restarted.sp); err != nil {
		t.Fatal(err)
	}
	if got := releasing(t, restarted.Store(), id); got != "COPY0000001" {
		t.Fatalf("release under way ended (releasing %q) before the name was found this process's own", got)
	}
	restarted.run()
	waitUntil(t, "the restarted process to find its name its own", restarted.names.Settled)
	if c, ok := restarted.nameCheck(); ok {
		t.Errorf("a restart is taken for a clash: %+v", c)
	}
	if log := restarted.log.String(); strings.Contains(log, "level=ERROR") {
		t.Errorf("a restart logs an error:\n%s", log)
	}
	waitUntil(t, "the restarted process to end the release of its former self", func() bool {
		return releasing(t, restarted.Store(), id) == ""
	})
}

// TestNewerSchema: in a rolling upgrade the first node of a newer
// version migrates the cluster's database under the older ones, which
// checked its schema only when they started. An older node finds out at
// its next heartbeat: it logs it once and reports "schema" degraded,
// saying what to do, until it is upgraded (here: the version put back).
func TestNewerSchema(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	n := openNode(t, url, "mx", "v-older")
	n.run()
	schemaCheck := func() (admin.Check, bool) {
		for _, c := range n.Engines() {
			if c.Name == "schema" {
				return c, true
			}
		}
		return admin.Check{}, false
	}
	waitUntil(t, "a first heartbeat", func() bool { _, ok := schemaCheck(); return !ok && n.names.Settled() })

	conn, err := pgx.Connect(testCtx(t), url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	setVersion := func(v int) {
		if _, err := conn.Exec(testCtx(t), "UPDATE schema_version SET version = $1", v); err != nil {
			t.Fatal(err)
		}
	}
	setVersion(sqlstore.SchemaVersion() + 1)
	waitUntil(t, "the node to find the newer schema", func() bool { _, ok := schemaCheck(); return ok })
	c, _ := schemaCheck()
	if c.Status != admin.Degraded || !strings.Contains(c.Detail, fmt.Sprintf("schema version %d", sqlstore.SchemaVersion()+1)) ||
		!strings.Contains(c.Detail, "upgrade this node") {
		t.Errorf("check %+v; want degraded, naming the version and what to do", c)
	}
	if got := strings.Count(n.log.String(), "a newer mailgate migrated the cluster's database"); got != 1 {
		t.Errorf("logged %d times, want once:\n%s", got, n.log.String())
	}
	setVersion(sqlstore.SchemaVersion())
	waitUntil(t, "the check to go", func() bool { _, ok := schemaCheck(); return !ok })
}
