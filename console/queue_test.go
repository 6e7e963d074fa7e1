package console

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
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

// waitLong bounds a wait for what must happen long before it on any
// machine: an upper bound for a loaded one, never a measure.
const waitLong = 30 * time.Second

// blockingTraces is a store of traces whose Search waits at a gate while
// the test holds it shut, as a slow PostgreSQL would.
type blockingTraces struct {
	Traces
	mu       sync.Mutex
	gate     chan struct{} // nil: open
	entered  chan struct{} // a Search reached the shut gate
	searches atomic.Int64
}

func (b *blockingTraces) shut() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.gate = make(chan struct{})
}

func (b *blockingTraces) open() {
	b.mu.Lock()
	defer b.mu.Unlock()
	close(b.gate)
	b.gate = nil
}

func (b *blockingTraces) Search(ctx context.Context, f state.TraceFilter) ([]trace.Event, error) {
	b.searches.Add(1)
	b.mu.Lock()
	gate := b.gate
	b.mu.Unlock()
	if gate != nil {
		select {
		case b.entered <- struct{}{}:
		default:
		}
		select {
		case <-gate:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return b.Traces.Search(ctx, f)
}

// TestDashboardSlowStore: while the store is slow to give the day's
// tables, a dashboard waits for them no longer than its own request
// lets it, and then shows the tables read before; one read runs at a
// time, whoever asks; a client that hangs up does not end the read, whose
// tables the next dashboard shows.
func TestDashboardSlowStore(t *testing.T) {
	e := newTestEnv(t, "")
	recordStories(e)
	traces := &blockingTraces{Traces: e.c.opts.Traces, entered: make(chan struct{}, 1)}
	e.c.opts.Traces = traces
	b := e.browser()
	b.login("auditor")
	if r := b.get("/dashboard"); !strings.Contains(r.body, "spammer@bad.example") {
		t.Fatalf("first dashboard without the senders:\n%s", r.body)
	}
	perRead := traces.searches.Load()
	e.traces.Record(trace.Event{Time: e.clock(), QueueID: "NEW000000001", Event: "mail", From: ptr("newcomer@new.example")})
	e.advance(topEvery)
	traces.shut()

	// A's read is held at the store.
	ctxA, hangUp := context.WithCancel(context.Background())
	doneA := make(chan *httptest.ResponseRecorder, 1)
	go func() { doneA <- e.direct(ctxA, http.MethodGet, "/dashboard", nil, b.cookies()) }()
	select {
	case <-traces.entered:
	case <-time.After(waitLong):
		t.Fatal("the dashboard did not read the traces")
	}
	// B gives up after its own deadline, with the tables of before.
	doneB := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		doneB <- e.direct(ctx, http.MethodGet, "/dashboard", nil, b.cookies())
	}()
	select {
	case w := <-doneB:
		if body := w.Body.String(); w.Code != http.StatusOK || !strings.Contains(body, "spammer@bad.example") || strings.Contains(body, "newcomer@new.example") {
			t.Errorf("B past its deadline: %d, want 200 with the tables of before\n%s", w.Code, body)
		}
	case <-time.After(waitLong):
		t.Fatal("a second dashboard waits for the first one's read past its own deadline")
	}
	// A's client hangs up: A answers, the read goes on.
	hangUp()
	select {
	case <-doneA:
	case <-time.After(waitLong):
		t.Fatal("a dashboard whose client hung up still waits for the store")
	}
	if n := traces.searches.Load(); n != perRead+1 {
		t.Errorf("%d searches after the first read, want 1: one read at a time, held at its first", n-perRead)
	}
	traces.open()
	if r := b.get("/dashboard"); !strings.Contains(r.body, "newcomer@new.example") {
		t.Errorf("the read A's client left did not give the next dashboard its tables:\n%s", r.body)
	}
	if n := traces.searches.Load(); n != 2*perRead {
		t.Errorf("%d searches, want %d: the read A's client left was read again", n, 2*perRead)
	}
}
