package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state/trace"
)

// TestQueuePage: the queue shows each message with each recipient's
// state and the next hop's last reply; the operations go to the router
// by name, one by one or checked in bulk, and are audited.
func TestQueuePage(t *testing.T) {
	e := newTestEnv(t, "")
	e.backend.queue["0F3K9RD2C8M1A4QE"] = &spool.Envelope{ID: "0F3K9RD2C8M1A4QE", From: "a@good.example", Received: time.Now().Add(-time.Hour),
		Attempts: 3, NextAttempt: time.Now().Add(10 * time.Minute),
		Rcpts: []spool.Recipient{{Addr: "bob@example.test", Status: spool.Pending, Attempts: 3, LastReply: "451 4.3.0 <script>mailbox busy</script>", LastHost: "10.0.0.5:25"},
			{Addr: "carol@example.test", Status: spool.Delivered, LastReply: "250 ok"}}}
	e.backend.queue["0F3K9RD2C8M1A4QF"] = &spool.Envelope{ID: "0F3K9RD2C8M1A4QF", From: "", Received: time.Now(), Held: true,
		Rcpts: []spool.Recipient{{Addr: "dave@example.test", Status: spool.Pending}}}
	b := e.browser()
	tok := b.login("admin")
	r := b.get("/queue?state=deferred")
	for _, want := range []string{"0F3K9RD2C8M1A4QE", "451 4.3.0 &lt;script&gt;mailbox busy&lt;/script&gt;", "10.0.0.5:25", "carol@example.test", "Retry now"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("deferred page lacks %q", want)
		}
	}
	if strings.Contains(r.body, "0F3K9RD2C8M1A4QF") {
		t.Errorf("a held message is listed as deferred")
	}
	if r := b.get("/queue?state=held"); !strings.Contains(r.body, "0F3K9RD2C8M1A4QF") || !strings.Contains(r.body, "on hold") {
		t.Errorf("held page:\n%s", r.body)
	}
	r = b.post("/queue/bulk", url.Values{"csrf": {tok}, "op": {"hold"}, "id": {"0F3K9RD2C8M1A4QE", "0F3K9RD2C8M1A4QF"}})
	if r.code != http.StatusOK {
		t.Fatalf("bulk: %d\n%s", r.code, r.body)
	}
	if r := b.post("/queue/0F3K9RD2C8M1A4QE/delete", url.Values{"csrf": {tok}}); r.code != http.StatusOK {
		t.Fatalf("delete: %d", r.code)
	}
	want := "hold 0F3K9RD2C8M1A4QE,hold 0F3K9RD2C8M1A4QF,delete 0F3K9RD2C8M1A4QE"
	if got := strings.Join(e.backend.ops, ","); got != want {
		t.Fatalf("ops %s, want %s", got, want)
	}
	if r := b.get("/audit?action=queue.hold"); strings.Count(r.body, "queue.hold") < 2 || !strings.Contains(r.body, "console:admin") {
		t.Errorf("audit page:\n%s", r.body)
	}
	// An auditor sees the queue, without the buttons.
	aud := e.browser()
	aud.login("auditor")
	if r := aud.get("/queue"); !strings.Contains(r.body, "0F3K9RD2C8M1A4QE") || strings.Contains(r.body, "Retry now") {
		t.Errorf("auditor's queue page")
	}
}

// TestDashboard: the dashboard shows the metrics' totals, rejects by
// stage, stage latency, the top senders from the traces and the health.
func TestDashboard(t *testing.T) {
	e := newTestEnv(t, "")
	reg := prometheus.NewRegistry()
	actions := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailgate_policy_actions_total"}, []string{"action"})
	verdicts := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailgate_stage_verdicts_total"}, []string{"stage", "kind", "action"})
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "mailgate_stage_duration_seconds"}, []string{"stage", "kind", "phase"})
	reg.MustRegister(actions, verdicts, latency)
	actions.WithLabelValues("continue").Add(40)
	actions.WithLabelValues("reject").Add(7)
	verdicts.WithLabelValues("clamav", "clamav", "reject").Add(5)
	latency.WithLabelValues("spam", "spam", "data").Observe(0.004)
	e.c.opts.Metrics = reg
	recordStories(e)
	b := e.browser()
	b.login("auditor")
	r := b.get("/dashboard")
	if r.code != http.StatusOK {
		t.Fatalf("%d\n%s", r.code, r.body)
	}
	for _, want := range []string{`<div class="n">47</div>`, `<div class="n">7</div>`, "spam → reject", "spam", "4.0 ms",
		"spammer@bad.example", "192.0.2.66", `http-equiv="refresh"`, "spool"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("dashboard lacks %q", want)
		}
	}
	// The chart: samples two minutes and one minute ago, and now.
	e.c.samples.add(e.clock().Add(-2*time.Minute), []float64{30, 5, 0, 0})
	e.c.samples.add(e.clock().Add(-time.Minute), []float64{40, 5, 0, 0})
	r = b.get("/dashboard")
	if !strings.Contains(r.body, `<polyline class="line-in"`) || !strings.Contains(r.body, "in (7/min now)") {
		t.Errorf("chart:\n%s", r.body)
	}
	// The tables of the last day are read from the traces once per
	// topEvery, however often the page is loaded.
	e.traces.Record(trace.Event{Time: e.clock(), QueueID: "NEW000000001", Event: "mail", From: ptr("newcomer@new.example")})
	if r := b.get("/dashboard"); strings.Contains(r.body, "newcomer@new.example") {
		t.Error("the traces were read again within topEvery")
	}
	e.advance(topEvery)
	if r := b.get("/dashboard"); !strings.Contains(r.body, "newcomer@new.example") {
		t.Error("the traces were not read again after topEvery")
	}
}
