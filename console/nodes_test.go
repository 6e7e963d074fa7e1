package console

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// TestNodesPage: on one node there is no Nodes page nor link; in a
// cluster an auditor sees every node, the stale one and the one whose
// config differs marked; while an engine of the cluster is away, every
// page says which and since when.
func TestNodesPage(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	b.login("auditor")
	if r := b.get("/nodes"); r.code != 404 || strings.Contains(b.get("/tracking").body, `href="/nodes"`) {
		t.Fatalf("one node: /nodes %d; want 404 and no link", r.code)
	}

	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(e.dir, "state.db"), sqlstore.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	now := e.clock()
	for _, n := range []state.Node{
		{Name: "mx1", Version: "v1", ConfigHash: "aaaaaaaaaaaaaaaaaaaa", Health: "ok", Started: now.Add(-time.Hour), Heartbeat: now},
		{Name: "mx2", Version: "v1", ConfigHash: "aaaaaaaaaaaaaaaaaaaa", Health: "degraded: redis", Started: now.Add(-time.Hour), Heartbeat: now},
		{Name: "mx3", Version: "v1", ConfigHash: "bbbbbbbbbbbbbbbbbbbb", Health: "ok", Started: now.Add(-time.Hour), Heartbeat: now.Add(-time.Minute)},
	} {
		if _, err := st.Nodes().Heartbeat(context.Background(), n); err != nil {
			t.Fatal(err)
		}
	}
	since := now.Add(-5 * time.Minute)
	e.c.opts.Nodes, e.c.opts.StaleAfter = st.Nodes(), 30*time.Second
	e.c.opts.Engines = func() admin.Health {
		return admin.Health{{Name: "redis", Status: admin.Degraded, Detail: "unreachable: dial tcp: refused", Since: since}, {Name: "postgres", Status: admin.OK}}
	}
	r := b.get("/nodes")
	if r.code != 200 || !strings.Contains(r.body, `<a href="/nodes" class="here">Nodes</a>`) {
		t.Fatalf("/nodes: %d\n%s", r.code, r.body)
	}
	for _, want := range []string{
		`<td>mx1</td>`, `<span class="badge degraded">degraded: redis</span>`, "aaaaaaaaaaaa",
		`<tr class="differs"><td>mx3</td>`, `<span class="badge down">stale</span>`,
		"3 nodes, 1 stale (no heartbeat for 30s), 1 with a config that differs",
		"The cluster's Redis is unreachable</b> since " + since.Local().Format("2006-01-02 15:04:05"),
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("/nodes lacks %q", want)
		}
	}
	if strings.Contains(r.body, "PostgreSQL is unreachable") || strings.Contains(r.body, "dial tcp") {
		t.Errorf("the banner names an engine that answers, or shows the Go error:\n%s", r.body)
	}
}
