package router

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/state/trace"
)

// TestReloadRoutes: after Reload the next attempt goes where the new
// routes say.
func TestReloadRoutes(t *testing.T) {
	first, second := smtptest.NewServer(t), smtptest.NewServer(t)
	first.Stop() // keeps the message queued until the reload
	h := start(t, testConfig(serverRoute("ex.test", first)), openSpool(t))
	env := h.send("a@sender.test", []string{"b@ex.test"}, sample)
	h.waitAttempts(env.ID, 1)

	if err := h.r.Reload(testConfig(serverRoute("ex.test", second), serverRoute("other.test", second))); err != nil {
		t.Fatal(err)
	}
	if err := h.r.QueueOp(context.Background(), "retry", env.ID); err != nil {
		t.Fatal(err)
	}
	second.WaitFor(1, waitLong)
	h.waitGone(env.ID)
	if n := len(first.Messages()); n != 0 {
		t.Fatalf("the old route got %d messages", n)
	}
}

// TestQueueMetricsAndTrace: queue gauges by destination, outcome counters
// and trace events follow what the router did.
func TestQueueMetricsAndTrace(t *testing.T) {
	down := smtptest.NewServer(t)
	down.SetRcptReply("nobody@ex.test", 550)
	held := smtptest.NewServer(t)
	held.Stop()
	reg := prometheus.NewRegistry()
	dir := t.TempDir()
	tl, err := trace.Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := start(t, testConfig(serverRoute("ex.test", down), serverRoute("slow.test", held)), openSpool(t), Metrics(reg), Trace(tl))
	ok := h.send("a@sender.test", []string{"b@ex.test", "nobody@ex.test"}, sample)
	stuck := h.send("", []string{"x@slow.test", "y@slow.test"}, sample)
	down.WaitFor(1, waitLong)
	h.waitGone(ok.ID)
	h.waitAttempts(stuck.ID, 1)

	if got := testutil.ToFloat64(h.r.m.outcomes.WithLabelValues("relayed")); got < 1 {
		t.Errorf("relayed = %v", got)
	}
	if got := testutil.ToFloat64(h.r.m.outcomes.WithLabelValues("bounced")); got != 1 {
		t.Errorf("bounced = %v, want 1", got)
	}
	if got := testutil.ToFloat64(h.r.m.outcomes.WithLabelValues("deferred")); got < 2 {
		t.Errorf("deferred = %v, want >= 2", got)
	}
	dests, err := h.r.Destinations(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	// The stuck message, the DSN to a@sender.test (MX delivery, which
	// the test's DNS cannot resolve), and ex.test's route, at 0.
	byName := map[string]Destination{}
	for _, d := range dests {
		byName[d.Name] = d
	}
	if d := byName["slow.test"]; len(dests) != 3 || d.Messages != 1 || time.Since(d.Oldest) > time.Minute ||
		byName["sender.test"].Messages != 1 || byName["ex.test"].Messages != 0 {
		t.Fatalf("destinations %+v", dests)
	}
	if n, err := testutil.GatherAndCount(reg, "mailgate_queue_messages", "mailgate_queue_oldest_age_seconds"); err != nil || n != 6 {
		t.Fatalf("queue gauges: %d series, %v", n, err)
	}

	evs, err := trace.Find(dir, ok.ID)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		got = append(got, e.Event+":"+e.Action+":"+strings.Join(e.Rcpts, ","))
	}
	s := strings.Join(got, " ")
	for _, want := range []string{"attempt:relayed:b@ex.test", "attempt:bounced:nobody@ex.test", "dsn::a@sender.test"} {
		if !strings.Contains(s, want) {
			t.Errorf("trace of %s lacks %s: %s", ok.ID, want, s)
		}
	}
}
