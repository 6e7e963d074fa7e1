package main

import (
	"context"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// stateV2 is a state.db an older mailgate wrote (schema version 2), made
// and described by state/sqlstore's TestFixtureV2: two list entries of
// bob, three audit entries of node "single" (two alike), the session
// "session-live" revoked until 2099 and "session-old" past its expiry,
// the links of bob (generation 2) and carol (1) revoked.
const stateV2 = "../../state/sqlstore/testdata/state-v2.db"

// TestClusterImportStateDB: `mailgate cluster import` copies what a
// single node's state.db holds, of an older schema, into the cluster's
// PostgreSQL with its quarantine: the lists, the audit log with each
// entry's time, node and actor, the revoked sessions and end users'
// links (so that a link revoked on the node stays refused), and says how
// many of each it copied; state.db keeps its bytes and time, and nothing
// is made beside it. A second run copies nothing and says 0 of each.
func TestClusterImportStateDB(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	conf := writeConfig(t, fmt.Sprintf("\n[cluster]\npostgres = %q\nnode = \"single\"\n", url))
	data := filepath.Join(filepath.Dir(conf), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(data, "state.db")
	b, err := os.ReadFile(stateV2)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	hourAgo := time.Now().Add(-time.Hour)
	if err := os.Chtimes(db, hourAgo, hourAgo); err != nil {
		t.Fatal(err)
	}
	q, err := quarantine.Open(filepath.Join(data, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	msg := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(msg, []byte("Subject: held\r\n\r\nhi\r\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := q.Add(context.Background(), &quarantine.Record{ID: "0123456789ABCDEF", From: "a@sender.test", Rcpts: []string{"bob@example.test"}, Reason: "spam"}, msg); err != nil {
		t.Fatal(err)
	}
	untouched := func() string {
		t.Helper()
		b, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(db)
		if err != nil {
			t.Fatal(err)
		}
		beside, _ := filepath.Glob(db + "*")
		return fmt.Sprintf("sha256 %x, modified %s, files %q", sha256.Sum256(b), fi.ModTime(), beside)
	}
	before := untouched()

	imp := func(want ...string) {
		t.Helper()
		r := runMailgate(t, "cluster", "import", "-config", conf)
		if r.code != 0 {
			t.Fatalf("mailgate cluster import: exit %d\n%s%s", r.code, r.stdout, r.stderr)
		}
		for _, w := range want {
			if !strings.Contains(r.stdout, w+"\n") {
				t.Errorf("mailgate cluster import does not say %q:\n%s", w, r.stdout)
			}
		}
		if after := untouched(); after != before {
			t.Errorf("state.db changed:\nbefore %s\nafter  %s", before, after)
		}
	}
	imp("quarantine: 1 messages copied, 0 there already",
		"lists: 2 entries copied",
		"audit log: 3 entries copied",
		"revocations: 1 sessions, the links of 2 end users copied")

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := sqlstore.OpenPostgres(ctx, url, sqlstore.Options{Node: "check"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	cluster := func() {
		t.Helper()
		if es, err := st.Lists().Entries(ctx, "bob@example.test"); err != nil || len(es) != 2 {
			t.Errorf("bob's list in PostgreSQL: %+v, %v; want 2 entries", es, err)
		}
		es, err := st.Audit().Entries(ctx, state.AuditFilter{})
		if err != nil {
			t.Fatal(err)
		}
		var audit []string
		for _, e := range es {
			audit = append(audit, fmt.Sprintf("%s %s %s %s %s", e.Time.Format(time.RFC3339Nano), e.Node, e.Actor, e.Action, e.Target))
		}
		if want := []string{
			"2026-03-14T15:09:26.535897Z single admin list.add bob@example.test allow partner.example",
			"2026-03-14T15:09:26.535897Z single admin list.add bob@example.test allow partner.example",
			"2026-03-14T15:08:26.535897Z single admin quarantine.release ORIG00000001",
		}; !slices.Equal(audit, want) {
			t.Errorf("audit log in PostgreSQL:\n got %q\nwant %q", audit, want)
		}
		// A link carries the generation it was made in; one older than
		// the recipient's is refused (console).
		for rcpt, want := range map[string]int64{"bob@example.test": 2, "carol@example.test": 1} {
			if gen, err := st.Revocations().LinkGeneration(ctx, rcpt); err != nil || gen != want {
				t.Errorf("link generation of %s in PostgreSQL: %d, %v; want %d", rcpt, gen, err, want)
			}
		}
		if ok, err := st.Revocations().SessionRevoked(ctx, "session-live"); err != nil || !ok {
			t.Errorf("session-live in PostgreSQL: revoked %v, %v; want true", ok, err)
		}
		if rec, err := st.Quarantine().Get(ctx, "0123456789ABCDEF"); err != nil || rec.Node != "single" {
			t.Errorf("quarantined message in PostgreSQL: %+v, %v", rec, err)
		}
	}
	cluster()

	imp("quarantine: 0 messages copied, 1 there already",
		"lists: 0 entries copied",
		"audit log: 0 entries copied",
		"revocations: 0 sessions, the links of 0 end users copied",
		"digests sent: 0 copied")
	cluster()
}

// TestClusterImportUsage: the command's usage says what it copies.
func TestClusterImportUsage(t *testing.T) {
	r := runMailgate(t, "cluster", "import", "-h")
	out := strings.Join(strings.Fields(r.stdout+r.stderr), " ") // as the text wraps
	for _, w := range []string{"quarantine", "traces", "users' lists", "audit log", "revoked sessions and end users' links", "only reads the data_dir", "not copied twice"} {
		if !strings.Contains(out, w) {
			t.Errorf("mailgate cluster import -h does not say %q:\n%s", w, out)
		}
	}
}

// TestClusterRemove: `mailgate cluster remove` takes a node gone for
// good out of the registry and ends the releases it had under way, so
// that another node can release those messages; a node heard from in the
// last 10 minutes (live, or stopped: it may be restarting), or a name the
// cluster does not have, is refused and nothing changes.
func TestClusterRemove(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	conf := writeConfig(t, fmt.Sprintf("\n[cluster]\npostgres = %q\nnode = \"admin-box\"\n", url))
	ctx := context.Background()
	st, err := sqlstore.OpenPostgres(ctx, url, sqlstore.Options{Node: "gone"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	long := time.Now().Add(-time.Hour)
	for _, n := range []state.Node{
		{Name: "gone", Version: "1", Health: "ok", Started: long.Add(-time.Hour), Heartbeat: long},
		{Name: "live", Version: "1", Health: "ok", Started: long, Heartbeat: time.Now()},
		{Name: "restarting", Version: "1", Health: "stopped", Started: long, Heartbeat: time.Now().Add(-time.Minute)},
	} {
		if _, err := st.Nodes().Heartbeat(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	q := st.Quarantine()
	for _, id := range []string{"0123456789ABCDE1", "0123456789ABCDE2"} {
		rec := &state.QuarantineRecord{ID: id, From: "a@sender.test", Rcpts: []string{"bob@example.test"}, Reason: "spam", Time: long}
		if err := q.Put(ctx, rec, strings.NewReader("Subject: held\r\n\r\nhi\r\n")); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := q.BeginRelease(ctx, "0123456789ABCDE1", "gone", "COPYOFGONE000001", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := q.BeginRelease(ctx, "0123456789ABCDE2", "live", "COPYOFLIVE000001", nil); err != nil {
		t.Fatal(err)
	}

	// How long ago: the seconds the test took since the heartbeats, which
	// a loaded machine stretches.
	for _, c := range []struct{ node, says string }{
		{"live", `node "live" was heard from [0-9]+s ago \(ok\): remove a node only once it is gone for good, 10m0s after its last heartbeat`},
		{"restarting", `node "restarting" was heard from 1m[0-9]+s ago \(stopped\)`},
		{"nobody", `no node "nobody" in the cluster \(it has gone, live, restarting\)`},
	} {
		r := runMailgate(t, "cluster", "remove", "-config", conf, c.node)
		if r.code == 0 || !regexp.MustCompile(c.says).MatchString(r.stderr) {
			t.Errorf("cluster remove %s: exit %d, %q; want a refusal saying %q", c.node, r.code, r.stderr, c.says)
		}
	}
	if r := runMailgate(t, "cluster", "remove", "-config", conf); r.code != 2 {
		t.Errorf("cluster remove without a node: exit %d, want 2", r.code)
	}

	r := runMailgate(t, "cluster", "remove", "-config", conf, "gone")
	if r.code != 0 || !strings.Contains(r.stdout, "quarantine 0123456789ABCDE1: the release COPYOFGONE000001 under way on gone ended") ||
		!strings.Contains(r.stdout, "node gone removed from the cluster") {
		t.Fatalf("cluster remove gone: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if _, err := q.BeginRelease(ctx, "0123456789ABCDE1", "live", "COPYOFLIVE000002", nil); err != nil {
		t.Errorf("the message the gone node was releasing cannot be released by another: %v", err)
	}
	if rec, err := q.Get(ctx, "0123456789ABCDE2"); err != nil || rec.Releasing != "COPYOFLIVE000001" {
		t.Errorf("the live node's release under way: %+v, %v; want it left alone", rec, err)
	}
	nodes, err := st.Nodes().List(ctx)
	if err != nil || len(nodes) != 2 || nodes[0].Name != "live" || nodes[1].Name != "restarting" {
		t.Errorf("registry after the removal: %+v, %v; want live and restarting", nodes, err)
	}
	es, err := st.Audit().Entries(ctx, state.AuditFilter{Action: "cluster.remove"})
	if err != nil || len(es) != 1 || es[0].Target != "gone" {
		t.Errorf("audit log: %+v, %v; want the removal of gone", es, err)
	}
}
