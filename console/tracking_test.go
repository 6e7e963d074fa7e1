package console

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state/trace"
)

func ptr(s string) *string { return &s }

// xss is text a sender controls (HELO, addresses, Message-ID, the reasons
// stages quote): a page must show it, never run it.
const xss = `<script>alert(1)</script><img src=x onerror=alert(2)>"'`

// recordStories writes the traces of three messages: one rejected at
// DATA by a stage, one delivered, one refused at RCPT.
func recordStories(e *testEnv) {
	at := e.clock().Add(-time.Hour)
	tick := func() time.Time { at = at.Add(time.Second); return at }
	l := e.traces
	// Rejected by spam at DATA.
	l.Record(trace.Event{Time: tick(), QueueID: "REJ000000001", Event: "connect", Client: "192.0.2.66", Helo: "spam.example" + xss})
	l.Record(trace.Event{Time: tick(), QueueID: "REJ000000001", Event: "mail", From: ptr("spammer@bad.example")})
	l.Record(trace.Event{Time: tick(), QueueID: "REJ000000001", Event: "rcpt", Rcpts: []string{"bob@example.test"}, Action: "continue"})
	l.Record(trace.Event{Time: tick(), QueueID: "REJ000000001", MessageID: "<rej@bad.example>", Event: "data", Action: "reject", Score: 17,
		Stage: "spam", Policy: "default", Reason: "score 17 reached reject_score 15; scored by spam 17 (GTUBE=17) " + xss, Reply: "550 5.7.1 Message rejected",
		Stages: []trace.Stage{
			{Name: "spf", Kind: "spf", Phase: "data", Action: stages.Continue, Result: "none", DurationMS: 1.2},
			{Name: "spam", Kind: "spam", Phase: "data", Action: stages.Reject, Score: 17, Result: "gtube", Reason: "GTUBE " + xss, DurationMS: 3.4},
		}})
	// Delivered.
	l.Record(trace.Event{Time: tick(), QueueID: "OK0000000001", Event: "connect", Client: "198.51.100.7", Helo: "mx.good.example"})
	l.Record(trace.Event{Time: tick(), QueueID: "OK0000000001", Event: "mail", From: ptr("alice@good.example")})
	l.Record(trace.Event{Time: tick(), QueueID: "OK0000000001", Event: "rcpt", Rcpts: []string{"carol@example.test"}, Action: "continue"})
	l.Record(trace.Event{Time: tick(), QueueID: "OK0000000001", MessageID: "<ok@good.example>", Event: "data", Action: "continue", Reply: "250 2.0.0 Ok: queued as OK0000000001"})
	l.Record(trace.Event{Time: tick(), QueueID: "OK0000000001", Event: "attempt", Action: "relayed", Rcpts: []string{"carol@example.test"}, Host: "10.0.0.5:25", Reply: "250 2.0.0 accepted"})
	// Refused at RCPT: relay denied.
	l.Record(trace.Event{Time: tick(), QueueID: "RCPT00000001", Event: "connect", Client: "203.0.113.9"})
	l.Record(trace.Event{Time: tick(), QueueID: "RCPT00000001", Event: "mail", From: ptr("x@relay.example")})
	l.Record(trace.Event{Time: tick(), QueueID: "RCPT00000001", Event: "rcpt", Rcpts: []string{"someone@elsewhere.example"}, Action: "reject",
		Reason: "relay denied: no route for elsewhere.example", Reply: "554 5.7.1 Relay access denied"})
}

// TestTrackingSearch: each criterion of the tracking center finds the
// messages it should, with their outcome.
func TestTrackingSearch(t *testing.T) {
	e := newTestEnv(t, "")
	recordStories(e)
	b := e.browser()
	b.login("auditor") // reading needs no more
	for _, c := range []struct {
		query     url.Values
		want, not []string
	}{
		{url.Values{"from": {"SPAMMER@bad"}}, []string{"REJ000000001", "rejected"}, []string{"OK0000000001", "RCPT00000001"}},
		{url.Values{"rcpt": {"carol@"}}, []string{"OK0000000001", "delivered"}, []string{"REJ000000001"}},
		{url.Values{"client": {"203.0.113."}}, []string{"RCPT00000001", "relay denied"}, []string{"OK0000000001"}},
		{url.Values{"outcome": {"rejected"}}, []string{"REJ000000001", "RCPT00000001"}, []string{"OK0000000001"}},
		{url.Values{"outcome": {"delivered"}}, []string{"OK0000000001"}, []string{"REJ000000001"}},
		{url.Values{"since": {e.clock().Add(-30 * time.Minute).Local().Format(timeLayout)}}, nil, []string{"REJ000000001", "OK0000000001"}},
		{url.Values{"since": {e.clock().Add(-2 * time.Hour).Local().Format(timeLayout)}}, []string{"REJ000000001", "OK0000000001", "RCPT00000001"}, nil},
	} {
		r := b.get("/tracking?" + c.query.Encode())
		if r.code != http.StatusOK {
			t.Fatalf("%v: %d\n%s", c.query, r.code, r.body)
		}
		for _, w := range c.want {
			if !strings.Contains(r.body, w) {
				t.Errorf("%v: page lacks %q", c.query, w)
			}
		}
		for _, n := range c.not {
			if strings.Contains(r.body, n) {
				t.Errorf("%v: page has %q", c.query, n)
			}
		}
	}
	// A queue ID or a Message-ID goes straight to the message.
	for _, id := range []string{"OK0000000001", "<ok@good.example>", "ok@good.example"} {
		r := b.get("/tracking?id=" + url.QueryEscape(id))
		if r.code != http.StatusSeeOther || r.h.Get("Location") != "/message/OK0000000001" {
			t.Errorf("id %s: %d %s", id, r.code, r.h.Get("Location"))
		}
	}
}

// TestMessageStory: a rejected message's page says why in one place:
// the decision, its stage, every stage's verdict, score, result, reason
// and time; what the sender wrote is shown as text, never markup.
func TestMessageStory(t *testing.T) {
	e := newTestEnv(t, "")
	recordStories(e)
	b := e.browser()
	b.login("admin")
	r := b.get("/message/REJ000000001")
	if r.code != http.StatusOK {
		t.Fatalf("%d\n%s", r.code, r.body)
	}
	for _, want := range []string{"rejected", "reject, score 17, by <b>spam</b>", "550 5.7.1 Message rejected",
		"GTUBE", "gtube", "3.4 ms", "1.2 ms", "192.0.2.66", "spammer@bad.example", "&lt;rej@bad.example&gt;",
		`<tr class="drove"><td>spam</td>`,
	} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(r.body, "<script>alert") || strings.Contains(r.body, "<img src=x") {
		t.Fatalf("sender's markup reached the page:\n%s", r.body)
	}
	if !strings.Contains(r.body, "&lt;script&gt;alert(1)&lt;/script&gt;&lt;img src=x onerror=alert(2)&gt;") {
		t.Errorf("sender's text not shown escaped")
	}
	r = b.get("/message/OK0000000001")
	for _, want := range []string{"delivered", "10.0.0.5:25", "250 2.0.0 accepted"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("delivered page lacks %q", want)
		}
	}
	if r := b.get("/message/NOSUCH000001"); r.code != http.StatusNotFound {
		t.Errorf("unknown message: %d", r.code)
	}
}
