package gateway_test

import (
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/console/browsertest"
	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/mailgate/mailgate/state/pgtest"
)

// webAdmin is an admin logged in to a console, without a browser.
type webAdmin struct {
	t    *testing.T
	base string
	http *http.Client
	csrf string
}

func webLogin(t *testing.T, base, password string) *webAdmin {
	t.Helper()
	jar, _ := cookiejar.New(nil)
	w := &webAdmin{t: t, base: base, http: &http.Client{Jar: jar, Timeout: waitLong}}
	code, page := w.post("/login", url.Values{"name": {"admin"}, "password": {password}})
	m := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)
	if code != http.StatusOK || m == nil {
		t.Fatalf("log in at %s: %d\n%s", base, code, page)
	}
	w.csrf = m[1]
	return w
}

func (w *webAdmin) do(req *http.Request) (int, string) {
	w.t.Helper()
	resp, err := w.http.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// get returns the status and the page at path (redirects followed).
func (w *webAdmin) get(path string) (int, string) {
	w.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, w.base+path, nil)
	return w.do(req)
}

// post sends form, with the session's CSRF token, as the console's own
// pages do.
func (w *webAdmin) post(path string, form url.Values) (int, string) {
	w.t.Helper()
	if w.csrf != "" {
		form.Set("csrf", w.csrf)
	}
	req, _ := http.NewRequest(http.MethodPost, w.base+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Sec-Fetch-Site", "same-origin")
	return w.do(req)
}

// TestClusterConsole: two nodes with the console share one PostgreSQL.
// A block-list entry an admin adds in A's console refuses the next
// message at B; what B's console does is in the audit log A's shows,
// with B's name; a message rejected at A is found in B's tracking
// center with why and which node took it; a message quarantined at A is
// listed and previewed in B's console, and released from both consoles
// at the same moment it reaches the downstream server once.
func TestClusterConsole(t *testing.T) {
	db := pgtest.Start(t).NewDatabase(t)
	down := smtptest.NewServer(t)
	const password = "cluster console password"
	a, baseA := consoleGatewayWith(t, down, password, pgConfig("a", db, ""))
	b, baseB := consoleGatewayWith(t, down, password, pgConfig("b", db, ""))
	wa, wb := webLogin(t, baseA, password), webLogin(t, baseB, password)

	// A list entry made at A decides at B.
	if code, page := wa.post("/lists", url.Values{"op": {"add"}, "owner": {"carol@example.test"}, "kind": {"block"}, "sender": {"@spam.example"}}); code != http.StatusOK {
		t.Fatalf("block at A: %d\n%s", code, page)
	}
	cb := dial(t, b.SMTPAddrs()[0])
	cb.Cmd("EHLO client.test", "250")
	if r := cb.TrySend("x@spam.example", []string{"carol@example.test"}, message("blocked@spam.example", "hello\r\n")); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("at B, from a sender carol's list at A blocks: %s", r)
	}
	queuedAs(t, cb.SendMail("x@spam.example", []string{"dave@example.test"}, message("free@spam.example", "hello\r\n")))

	// What B's console does, A's audit log shows, with B's name.
	if code, page := wb.post("/lists", url.Values{"op": {"add"}, "owner": {"dave@example.test"}, "kind": {"allow"}, "sender": {"friend.example"}}); code != http.StatusOK {
		t.Fatalf("allow at B: %d\n%s", code, page)
	}
	if _, page := wa.get("/audit?action=list.add"); !regexp.MustCompile(`<td>list.add</td><td>dave@example.test</td><td>allow friend.example</td><td>b</td>`).MatchString(page) ||
		!regexp.MustCompile(`<td>list.add</td><td>carol@example.test</td><td>block @spam.example</td><td>a</td>`).MatchString(page) {
		t.Fatalf("A's audit log lacks B's entry or its own:\n%s", page)
	}

	// A message rejected at A, found and explained at B.
	ca := dial(t, a.SMTPAddrs()[0])
	ca.Cmd("EHLO client.test", "250")
	if r := ca.SendMail("mallory@bad.example", []string{"strict@example.test"}, spamMessage("rejected@bad.example", "mallory@bad.example", "strict@example.test", "Rejected offer")); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("GTUBE to strict at A: %s", r)
	}
	var story string
	waitUntil(t, waitLong, "B's tracking center to find the message A rejected", func() bool {
		code, page := wb.get("/tracking?id=rejected@bad.example")
		story = page
		return code == http.StatusOK && strings.Contains(page, `<dl class="summary">`)
	})
	for _, want := range []string{`<span class="badge rejected">rejected</span>`, "<b>spam</b>", "GTUBE", "550 5.7.1", "mallory@bad.example", "<dt>Node</dt><dd>a</dd>", `<div class="node">on a</div>`} {
		if !strings.Contains(story, want) {
			t.Errorf("B's story of the message A rejected lacks %q", want)
		}
	}
	if t.Failed() {
		t.Fatalf("the story:\n%s", story)
	}
	if _, page := wb.get("/tracking?outcome=rejected"); !strings.Contains(page, "<th>Node</th>") || !strings.Contains(page, "<td>a</td>") {
		t.Errorf("B's tracking list does not name the node:\n%s", page)
	}

	// Quarantined at A: listed, previewed and released at B, once.
	id := queuedAs(t, ca.SendMail("eve@bad.example", []string{"bob@example.test"}, spamMessage("held@bad.example", "eve@bad.example", "bob@example.test", "Held at A")))
	if _, page := wb.get("/quarantine"); !strings.Contains(page, id) || !strings.Contains(page, "Held at A") {
		t.Fatalf("B's quarantine lacks %s:\n%s", id, page)
	}
	if code, page := wb.get("/quarantine/" + id); code != http.StatusOK || !strings.Contains(page, "Held at A") || !strings.Contains(page, `id="release"`) {
		t.Fatalf("B's preview of %s: %d\n%s", id, code, page)
	}
	var (
		wg    sync.WaitGroup
		codes [2]int
		pages [2]string
	)
	for i, w := range []*webAdmin{wa, wb} {
		wg.Go(func() { codes[i], pages[i] = w.post("/quarantine/"+id+"/release", url.Values{}) })
	}
	wg.Wait()
	released := 0
	for i := range 2 {
		switch {
		case codes[i] == http.StatusOK && strings.Contains(pages[i], "queued as"):
			released++
		case codes[i] == http.StatusConflict && (strings.Contains(pages[i], "released already") || strings.Contains(pages[i], "in progress")):
		default:
			t.Errorf("release at node %d: %d\n%s", i, codes[i], pages[i])
		}
	}
	if released != 1 {
		t.Fatalf("%d releases went through; want 1", released)
	}
	downstreamWith(t, down, "held@bad.example", 1)
	waitQueueEmpty(t, a)
	waitQueueEmpty(t, b)
	if got := downstreamWith(t, down, "held@bad.example", 1); len(got) != 1 {
		t.Fatalf("the message released from two consoles reached the server %d times", len(got))
	}
}

// clusterConsoleNode starts node name of the cluster in PostgreSQL db
// with the console (an admin whose password has the bcrypt hash hash)
// and more config; every node given the same more runs the same config
// (the console's address is the node's own, and not in the hash).
func clusterConsoleNode(t *testing.T, down *smtptest.Server, hash []byte, name, db, more string) (*gateway.Gateway, string) {
	t.Helper()
	web := testkit.FreeAddr(t)
	g := startGateway(t, routeTo(down, "example.test")+more+fmt.Sprintf("\n[web]\nlisten = %q\n[[web.user]]\nname = \"admin\"\npassword_hash = %q\n", web, hash)+
		pgConfig(name, db, ""))
	return g, "http://" + web
}

// TestClusterConsoleNodes, in a browser: the Nodes page of one node lists
// the three nodes of the cluster, live, and flags the one whose config
// differs. While PostgreSQL is stopped every page says so, with since
// when; a page that needs the store says it cannot be read (503, not a
// Go error); mail keeps flowing; once PostgreSQL is back, the banner
// goes by itself. Screenshots: nodes, outage.
func TestClusterConsoleNodes(t *testing.T) {
	br := browsertest.Start(t)
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	down := smtptest.NewServer(t)
	const password = "nodes test password"
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	limit := "\n[[ratelimit]]\nname = \"per-client\"\nkey = \"client_ip\"\nrate = 100\nper = \"1h\"\n"
	a, base := clusterConsoleNode(t, down, hash, "a", db, limit)
	clusterConsoleNode(t, down, hash, "b", db, limit)
	clusterConsoleNode(t, down, hash, "c", db, strings.Replace(limit, "rate = 100", "rate = 50", 1))
	w := webLogin(t, base, password)

	row := func(page, node string) string {
		m := regexp.MustCompile(`(?s)<tr[^>]*><td>` + node + `</td>.*?</tr>`).FindString(page)
		return m
	}
	var page string
	waitUntil(t, waitLong, "the Nodes page to list three live nodes", func() bool {
		_, page = w.get("/nodes")
		return strings.Count(page, `<span class="badge ok">live</span>`) == 3
	})
	for _, n := range []string{"a", "b", "c"} {
		r := row(page, n)
		if r == "" || !strings.Contains(r, `<span class="badge ok">ok</span>`) || strings.Contains(r, "config differs") != (n == "c") {
			t.Errorf("node %s's row: %q; want it ok, its config flagged for c only", n, r)
		}
	}
	if !strings.Contains(page, "3 nodes, 0 stale") || !strings.Contains(page, `<a href="/nodes" class="here">Nodes</a>`) {
		t.Errorf("the Nodes page:\n%s", page)
	}
	tab := br.Tab()
	br.Do(tab, "log in",
		chromedp.Navigate(base+"/nodes"),
		chromedp.WaitVisible(chromedp.CSS(`input[name=name]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "admin"),
		chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
		chromedp.Click(chromedp.CSS(`form.login button`)),
		chromedp.WaitVisible(chromedp.CSS(`table.nodes`)))
	br.Screenshot(tab, "nodes")

	// A message at A leaves a trace to look for while PostgreSQL is away.
	c := dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"bob@example.test"}, message("before@test", "hi\r\n")))
	waitUntil(t, waitLong, "the message's trace in the store", func() bool {
		code, _ := w.get("/message/" + id)
		return code == http.StatusOK
	})

	pg.Stop()
	defer func() {
		if t.Failed() {
			t.Log(page)
		}
	}()
	const banner = "The cluster's PostgreSQL is unreachable</b> since "
	waitUntil(t, waitLong, "every page to say PostgreSQL is unreachable", func() bool {
		_, page = w.get("/dashboard")
		return strings.Contains(page, banner)
	})
	for _, path := range []string{"/dashboard", "/tracking?outcome=delivered", "/quarantine", "/lists", "/audit", "/nodes"} {
		if _, page := w.get(path); !strings.Contains(page, banner) || !strings.Contains(page, "cannot be read while the cluster&#39;s PostgreSQL is unreachable") {
			t.Errorf("%s with PostgreSQL stopped says nothing of it:\n%s", path, page)
		}
	}
	if code, page := w.get("/message/" + id); code != http.StatusServiceUnavailable || !strings.Contains(page, "The traces cannot be read while") {
		t.Errorf("a message's page with PostgreSQL stopped: %d\n%s", code, page)
	}
	br.Do(tab, "a page with PostgreSQL stopped", chromedp.Navigate(base+"/tracking?outcome=delivered"), chromedp.WaitVisible(chromedp.CSS(`div.outage`)))
	br.Screenshot(tab, "outage")
	queuedAs(t, c.SendMail("a@sender.test", []string{"bob@example.test"}, message("during@test", "hi\r\n")))
	downstreamWith(t, down, "during@test", 1)

	pg.Restart()
	waitUntil(t, waitLong, "the banner to go once PostgreSQL is back", func() bool {
		_, page = w.get("/dashboard")
		return !strings.Contains(page, "unreachable")
	})
	if code, _ := w.get("/message/" + id); code != http.StatusOK {
		t.Errorf("a message's page after PostgreSQL came back: %d", code)
	}
}

// TestClusterDigestsOnce: messages quarantined at node A (held in
// PostgreSQL) are due in the daily digests of nodes B and C, both
// running theirs the same day: each recipient gets one digest, listing
// their mail, and the node that did not send it says so.
func TestClusterDigestsOnce(t *testing.T) {
	db := pgtest.Start(t).NewDatabase(t)
	down := smtptest.NewServer(t)
	spam := "\n[[stage]]\nname = \"spam\"\nkind = \"spam\"\n\n[policy]\nquarantine_score = 10.0\nreject_score = 5000.0\n"
	a := startGateway(t, routeTo(down, "example.test")+spam+pgConfig("a", db, ""))
	c := dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	for i, rcpt := range []string{"bob@example.test", "carol@example.test", "carol@example.test"} {
		queuedAs(t, c.SendMail("x@spam.example", []string{rcpt}, spamMessage(fmt.Sprintf("held%d@spam.example", i), "x@spam.example", rcpt, fmt.Sprintf("Held %d", i))))
	}
	// B and C send their digests at start: a day's are due after
	// 00:00 and neither has sent any.
	var dirs []string
	nodes := []*gateway.Gateway{a}
	for _, name := range []string{"b", "c"} {
		web := testkit.FreeAddr(t)
		dir := t.TempDir()
		nodes = append(nodes, startGatewayIn(t, dir, routeTo(down, "example.test")+spam+fmt.Sprintf("\n[web]\nlisten = %q\nbase_url = \"http://%s\"\n[web.digest]\nat = \"00:00\"\n", web, web)+
			pgConfig(name, db, ""), gateway.Options{Logger: testLogger(t)}))
		dirs = append(dirs, dir)
	}
	// Each run ended, and what it queued went through the pickup
	// directory into the spool and out: nothing more can come.
	for i, dir := range dirs {
		waitUntil(t, waitLong, "the node's digest run to end", func() bool {
			b, err := os.ReadFile(filepath.Join(dir, "web", "digest-sent"))
			left, _ := filepath.Glob(filepath.Join(dir, "pickup", "digest-*"))
			queued, _ := os.ReadDir(filepath.Join(dir, "pickup", ".queued"))
			return err == nil && !strings.Contains(string(b), `"until"`) && len(left)+len(queued) == 0
		})
		waitQueueEmpty(t, nodes[i+1])
	}
	digests := func() map[string][]string {
		got := map[string][]string{}
		for _, m := range down.Messages() {
			if strings.Contains(string(m.Data), "Auto-Submitted: auto-generated") {
				_, body, _ := strings.Cut(string(m.Data), "\r\n\r\n")
				b, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
				got[strings.Join(m.Rcpts, ",")] = append(got[strings.Join(m.Rcpts, ",")], string(b))
			}
		}
		return got
	}
	got := digests()
	if len(got["bob@example.test"]) != 1 || len(got["carol@example.test"]) != 1 {
		t.Fatalf("digests by recipient: bob %d, carol %d; want one each", len(got["bob@example.test"]), len(got["carol@example.test"]))
	}
	if d := got["carol@example.test"][0]; !strings.Contains(d, "Held 1") || !strings.Contains(d, "Held 2") || strings.Contains(d, "Held 0") {
		t.Errorf("carol's digest:\n%s", d)
	}
}
