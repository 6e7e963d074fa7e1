package ratelimit

import (
	"context"
	"errors"
	"math/rand/v2"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/redisconn"
	"github.com/mailgate/mailgate/stages/redistest"
)

func openRedis(t *testing.T, s *redistest.Server) *redisconn.Client {
	t.Helper()
	c, err := redisconn.Open(stages.Redis{URL: s.URL(), Timeout: 2 * time.Second, ConnectTimeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisMatchesTable: the script in Redis decides as Limit.Take does
// in a Table, event by event, for random limits, keys and clocks (the
// clock going back included), at whole microseconds.
func TestRedisMatchesTable(t *testing.T) {
	r := NewRedis(openRedis(t, redistest.Start(t)))
	tab := NewTable(0)
	rnd := rand.New(rand.NewPCG(1, 2))
	limits := []Limit{
		{Interval: time.Second, Burst: 3},
		{Interval: 36 * time.Second, Burst: 1},
		{Interval: 1500 * time.Microsecond, Burst: 50},
		{Interval: time.Hour, Burst: 10},
	}
	base := time.Date(2026, 12, 6, 12, 0, 0, 0, time.UTC)
	now := base
	ctx := context.Background()
	for i := range 2000 {
		// Mostly forward by up to two seconds, sometimes back.
		now = now.Add(time.Duration(rnd.Int64N(int64(2*time.Second))) / time.Microsecond * time.Microsecond)
		if rnd.IntN(50) == 0 {
			now = now.Add(-time.Duration(rnd.Int64N(int64(10*time.Second))) / time.Microsecond * time.Microsecond)
		}
		li := rnd.IntN(len(limits))
		k := KeyOf("rule", string(rune('a'+li*3+rnd.IntN(3))))
		want, _ := tab.Take(ctx, k, limits[li], now)
		got, err := r.Take(ctx, k, limits[li], now)
		if err != nil {
			t.Fatal(err)
		}
		if got != want {
			t.Fatalf("event %d at %v, limit %+v: Redis says %v, Table %v", i, now.Sub(base), limits[li], got, want)
		}
	}
}

// TestRedisAcrossNodes: two clients, as two nodes, spending one key's
// burst at the same moment pass exactly the burst between them: the
// script runs alone.
func TestRedisAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	nodes := []Store{NewRedis(openRedis(t, srv)), NewRedis(openRedis(t, srv))}
	lim := NewLimit(10, time.Hour, 10)
	k := KeyOf("per-client", "192.0.2.1")
	now := time.Now()
	var passed atomic.Int64
	var wg sync.WaitGroup
	for i := range 40 {
		wg.Go(func() {
			ok, err := nodes[i%2].Take(context.Background(), k, lim, now)
			if err != nil {
				t.Error(err)
			}
			if ok {
				passed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := passed.Load(); n != 10 {
		t.Fatalf("%d events passed of 40 across two nodes; want the burst, 10", n)
	}
}

// TestRedisDownFailsOpen: with Redis killed, every check passes at once
// (not after a timeout each), counted as a store fault; when Redis comes
// back (empty, as one without persistence does) the limits hold again
// with no one telling them.
func TestRedisDownFailsOpen(t *testing.T) {
	srv := redistest.Start(t)
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	client := openRedis(t, srv)
	rules := New([]policy.RateLimit{{Name: "per-client", Key: "client_ip", Rate: 2, Per: stages.Duration(time.Hour), Burst: 2,
		Count: "message", Action: "defer"}}, Env{Store: NewRedis(client), Metrics: m})
	ev := Event{Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.7")}, From: "a@example.org"}
	check := func() *Exceeded { return rules.Check(context.Background(), ev) }
	if check() != nil || check() != nil || check() == nil {
		t.Fatal("the limit does not hold with Redis up: want 2 passes, then a refusal")
	}

	srv.Kill()
	start := time.Now()
	for i := range 100 {
		if e := check(); e != nil {
			t.Fatalf("check %d with Redis down refused: %s", i, e.Reason)
		}
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("100 checks with Redis down took %v; want them to fail fast", d)
	}
	if n := testutil.ToFloat64(m.faults.WithLabelValues("store")); n != 100 {
		t.Errorf("store faults = %v, want 100", n)
	}

	srv.Restart()
	waitRedis(t, client)
	// Redis came back empty: the burst is whole again, then spent.
	if check() != nil || check() != nil || check() == nil {
		t.Fatal("the limit does not hold after Redis came back: want 2 passes, then a refusal")
	}
}

// waitRedis waits until c finds Redis answering again, as a command would
// after the fail-fast second.
func waitRedis(t *testing.T, c *redisconn.Client) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.Health(context.Background()) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Redis not answering %v after its restart: %v", 30*time.Second, c.Err())
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

// TestRedisErrorsNameRedis: a failing Take says it was Redis, and is
// ErrDown while Redis is known to be away.
func TestRedisErrorsNameRedis(t *testing.T) {
	srv := redistest.Start(t)
	r := NewRedis(openRedis(t, srv))
	srv.Kill()
	k, lim := KeyOf("r", "v"), NewLimit(1, time.Hour, 1)
	if _, err := r.Take(context.Background(), k, lim, time.Now()); err == nil {
		t.Fatal("Take with Redis down: no error")
	}
	_, err := r.Take(context.Background(), k, lim, time.Now())
	if !errors.Is(err, redisconn.ErrDown) {
		t.Fatalf("second Take with Redis down: %v; want ErrDown at once", err)
	}
}
