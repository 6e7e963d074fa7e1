package greylist

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/redistest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// node is a greylist filter of one cluster node: its own data directory,
// the cluster's Redis, the test's clock.
func node(t *testing.T, srv *redistest.Server, c *clock, log *testkit.SyncBuffer) *Filter {
	t.Helper()
	env := stages.Env{DataDir: t.TempDir(), Redis: stages.Redis{URL: srv.URL(), Timeout: 2 * time.Second, ConnectTimeout: time.Second}}
	f, err := newFilter(env, stages.JSONConfig([]byte(`{"auto_allow": 2}`)), c.now, slog.New(slog.NewTextHandler(log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// TestRedisRetryAtAnotherNode: a triplet first seen on node A passes
// when its retry, after the delay, comes to node B; a network's passes
// counted on both nodes auto-allow it on either.
func TestRedisRetryAtAnotherNode(t *testing.T) {
	srv := redistest.Start(t)
	c, log := newClock(), &testkit.SyncBuffer{}
	a, b := node(t, srv, c, log), node(t, srv, c, log)
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	run(t, a, m, Greylisted)
	c.add(time.Minute)
	run(t, b, m, Greylisted) // too early, at any node
	c.add(5 * time.Minute)
	run(t, b, m, Passed)
	run(t, a, m, Passed)

	// A second triplet of the network passes through A: two passes,
	// auto_allow 2, and B allows the network.
	m2 := tx("192.0.2.11", "c@sender.test", "b@dest.test")
	run(t, b, m2, Greylisted)
	c.add(6 * time.Minute)
	run(t, a, m2, Passed)
	run(t, b, tx("192.0.2.12", "new@sender.test", "x@dest.test"), Allowed)
}

// TestRedisDownFailsOpen: with Redis killed, every recipient passes as
// unavailable (logged, not once per recipient); once Redis is back,
// greylisting resumes by itself.
func TestRedisDownFailsOpen(t *testing.T) {
	srv := redistest.Start(t)
	c, log := newClock(), &testkit.SyncBuffer{}
	f := node(t, srv, c, log)
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	run(t, f, m, Greylisted)

	srv.Kill()
	for range 50 {
		run(t, f, m, Unavailable)
	}
	if n := f.alarms.total("store"); n != 50 {
		t.Errorf("%d store faults counted; want 50", n)
	}
	if n := strings.Count(log.String(), "fail open"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, log)
	}

	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for {
		v, err := f.Run(context.Background(), stages.Rcpt, m)
		if err != nil {
			t.Fatal(err)
		}
		if v.Result == Greylisted {
			break // Redis came back empty: a new triplet
		}
		if time.Now().After(deadline) {
			t.Fatalf("greylisting not back 30s after Redis: %s (%s)", v.Result, v.Reason)
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
}
