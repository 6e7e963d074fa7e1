package gateway_test

import (
	"context"
	"fmt"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/console/browsertest"
	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// hostileHTML is quarantined mail whose HTML tries to run script, load
// remote images and frames, and restyle the page that shows it.
const hostileHTML = "From: eve@bad.example\r\nTo: bob@example.test, carol@example.test\r\nSubject: You won <script>window.__pwned=1</script>\r\n" +
	"Message-ID: <hostile@bad.example>\r\nMIME-Version: 1.0\r\nContent-Type: text/html; charset=utf-8\r\n\r\n" +
	"<html><head><style>body{display:none}</style><script>window.__pwned=2</script></head><body>" +
	"<p>Dear winner, claim <a href=\"https://phish.example/\">your prize</a>.</p>" +
	"<img src=\"http://127.0.0.1:9/pixel.gif\" onerror=\"window.__pwned=3\"><iframe src=\"http://127.0.0.1:9/\"></iframe>" +
	"<script>window.__pwned=4</script><p>" + gtube + "</p></body></html>\r\n"

func spamMessage(id, from, to, subject string) string {
	return "From: " + from + "\r\nTo: " + to + "\r\nSubject: " + subject + "\r\nMessage-ID: <" + id + ">\r\n\r\n" + gtube + "\r\n"
}

// consoleGateway runs a gateway with the console on loopback, the spam
// stage, and a policy that quarantines GTUBE (rejects it for
// strict@example.test); it returns the gateway's SMTP address and the
// console's base URL.
func consoleGateway(t *testing.T, down *smtptest.Server, password string) (g *gateway.Gateway, base string) {
	t.Helper()
	return consoleGatewayWith(t, down, password, "")
}

// consoleGatewayWith is consoleGateway with more config (a [cluster]).
func consoleGatewayWith(t *testing.T, down *smtptest.Server, password, more string) (g *gateway.Gateway, base string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := testkit.FreeAddr(t)
	base = "http://" + web
	g = startGateway(t, routeTo(down, "example.test")+fmt.Sprintf(`
[[stage]]
name = "spam"
kind = "spam"

[policy]
quarantine_score = 10.0
reject_score = 5000.0

[[policy.override]]
name = "strict"
rcpts = ["strict@example.test"]
reject_score = 100.0

[web]
listen = %q
base_url = %q

[[web.user]]
name = "admin"
password_hash = %q
`, web, base, hash)+more)
	return g, base
}

// downstreamWith waits until the downstream server has n messages with
// Message-ID id and returns them.
func downstreamWith(t *testing.T, down *smtptest.Server, id string, n int) []smtptest.Message {
	t.Helper()
	var got []smtptest.Message
	waitUntil(t, waitLong, fmt.Sprintf("%d deliveries of <%s>", n, id), func() bool {
		got = nil
		for _, m := range down.Messages() {
			if messageID(m.Data) == id {
				got = append(got, m)
			}
		}
		return len(got) >= n
	})
	return got
}

// TestConsoleInBrowser drives the console in headless chromium against
// the real gateway: an admin logs in, finds a rejected message and reads
// why, previews a quarantined message whose HTML tries to run script
// (inert), releases it from two browsers at once (delivered once), a
// forged POST is refused, an end user's digest link shows their mail
// only (and a digest's release link no more than its message), releases
// one message to them, and their block and allow decide
// the next messages at SMTP. Screenshots of each page are written
// ($MAILGATE_SCREENSHOTS, else the test's temporary directory).
func TestConsoleInBrowser(t *testing.T) {
	br := browsertest.Start(t)
	down := smtptest.NewServer(t)
	const password = "browser test password"
	g, base := consoleGateway(t, down, password)

	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.good.example", "250")
	queuedAs(t, c.SendMail("alice@good.example", []string{"bob@example.test"}, message("ham@good.example", "hello\r\n")))
	if r := c.SendMail("mallory@bad.example", []string{"strict@example.test"}, spamMessage("rejected@bad.example", "mallory@bad.example", "strict@example.test", "Rejected offer")); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("GTUBE to strict: %s", r)
	}
	hostile := queuedAs(t, c.SendMail("eve@bad.example", []string{"bob@example.test", "carol@example.test"}, hostileHTML))
	queuedAs(t, c.SendMail("news@shop.example", []string{"carol@example.test"}, spamMessage("deals@shop.example", "news@shop.example", "carol@example.test", "Weekly deals")))
	queuedAs(t, c.SendMail("x@spam.example", []string{"carol@example.test"}, spamMessage("pills@spam.example", "x@spam.example", "carol@example.test", "Cheap pills")))
	queuedAs(t, c.SendMail("y@other.example", []string{"bob@example.test"}, spamMessage("bob@other.example", "y@other.example", "bob@example.test", "For bob only")))
	downstreamWith(t, down, "ham@good.example", 1)

	// An admin logs in and finds the rejected message: why, in one click.
	admin := br.Tab()
	login := func(tab context.Context) {
		br.Do(tab, "log in",
			chromedp.Navigate(base+"/tracking"),
			chromedp.WaitVisible(chromedp.CSS(`input[name=name]`)),
			chromedp.SendKeys(chromedp.CSS(`input[name=name]`), "admin"),
			chromedp.SendKeys(chromedp.CSS(`input[name=password]`), password),
			chromedp.Click(chromedp.CSS(`form.login button`)),
			chromedp.WaitVisible(chromedp.CSS(`form.search`)))
	}
	login(admin)
	br.Do(admin, "search rejected mail",
		chromedp.Navigate(base+"/tracking?outcome=rejected"),
		chromedp.WaitVisible(chromedp.CSS(`table.messages`)))
	br.Screenshot(admin, "tracking")
	br.Do(admin, "open the rejected message",
		chromedp.Click(chromedp.CSS(`table.messages tbody a`)),
		chromedp.WaitVisible(chromedp.CSS(`dl.summary`)))
	if !br.Contains(admin, "rejected", "strict", "spam", "GTUBE", "550 5.7.1", "mallory@bad.example") {
		t.Fatalf("the rejected message's page does not say why:\n%s", br.Text(admin))
	}
	br.Screenshot(admin, "message")

	// The quarantine, and a hostile message shown inert.
	br.Do(admin, "the quarantine",
		chromedp.Navigate(base+"/quarantine"),
		chromedp.WaitVisible(chromedp.CSS(`table.quarantine`)))
	br.Screenshot(admin, "quarantine")
	br.Do(admin, "preview the hostile message",
		chromedp.Navigate(base+"/quarantine/"+hostile),
		chromedp.WaitVisible(chromedp.CSS(`#body`)))
	type inertness struct {
		Pwned   bool `json:"pwned"`
		Scripts int  `json:"scripts"`
		Loaded  int  `json:"loaded"`
		Shown   bool `json:"shown"`
	}
	inert := browsertest.Run(br, admin, "look for what the message tried", chromedp.Evaluate[inertness](`({
		pwned: window.__pwned !== undefined,
		scripts: document.querySelectorAll("script:not([src='/static/console.js'])").length,
		loaded: document.querySelectorAll("img, iframe, object, embed, form[action^=http]").length,
		shown: getComputedStyle(document.body).display !== "none"})`))
	if inert.Pwned || inert.Scripts != 0 || inert.Loaded != 0 || !inert.Shown {
		t.Fatalf("the message's HTML reached the page: %+v", inert)
	}
	if !br.Contains(admin, "Dear winner, claim your prize [https://phish.example/].", "You won <script>window.__pwned=1</script>") {
		t.Fatalf("preview:\n%s", br.Text(admin))
	}
	br.Screenshot(admin, "preview")

	// Released from two browsers at the same moment: delivered once.
	other := br.Tab()
	login(other)
	for _, tab := range []context.Context{admin, other} {
		br.Do(tab, "open the release", chromedp.Navigate(base+"/quarantine/"+hostile), chromedp.WaitVisible(chromedp.CSS(`#release`)))
	}
	var wg sync.WaitGroup
	texts := make([]string, 2)
	for i, tab := range []context.Context{admin, other} {
		wg.Go(func() {
			err := chromedp.Do(tab, chromedp.Click(chromedp.CSS(`#release`)), chromedp.WaitVisible(chromedp.CSS(`ul.done`)))
			if err == nil {
				texts[i], err = chromedp.Run(tab, chromedp.Text(chromedp.CSS("ul.done")))
			}
			if err != nil {
				t.Errorf("release in tab %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	released := 0
	for _, s := range texts {
		if strings.Contains(s, "queued as") {
			released++
		} else if !strings.Contains(s, "released already") {
			t.Errorf("a release said %q", s)
		}
	}
	if released != 1 {
		t.Fatalf("%d releases succeeded, want 1: %q", released, texts)
	}
	got := downstreamWith(t, down, "hostile@bad.example", 1)
	waitQueueEmpty(t, g)
	if got = downstreamWith(t, down, "hostile@bad.example", 1); len(got) != 1 || strings.Join(got[0].Rcpts, ",") != "bob@example.test,carol@example.test" {
		t.Fatalf("the released message reached the server %d times, to %v", len(got), got[0].Rcpts)
	}

	// A forged POST: from another site, and from a page without the
	// token. Both refused; the message stays.
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html")
		fmt.Fprintf(w, `<form method="post" action="%s/quarantine/bulk"><input name="op" value="delete"><input name="id" value="x"><input name="csrf" value="forged"></form><script>document.forms[0].submit()</script>`, base)
	}))
	defer evil.Close()
	br.Do(admin, "a page of another site posts to the console",
		chromedp.Navigate(strings.Replace(evil.URL, "127.0.0.1", "localhost", 1)),
		chromedp.WaitVisible(chromedp.CSS(`p.problem`)))
	if !br.Contains(admin, "another site") {
		t.Fatalf("cross-site POST:\n%s", br.Text(admin))
	}
	br.Do(admin, "the quarantine", chromedp.Navigate(base+"/quarantine"), chromedp.WaitVisible(chromedp.CSS(`table.quarantine`)))
	status := browsertest.Run(br, admin, "a POST without the CSRF token",
		chromedp.Evaluate[int](`fetch("/quarantine/bulk", {method: "POST", body: new URLSearchParams({op: "delete", id: "x"})}).then(r => r.status)`,
			chromedp.EvalAwaitPromise))
	if status != http.StatusForbidden {
		t.Fatalf("POST without the token: %d, want 403", status)
	}

	// The digest: carol's link shows carol's mail only.
	br.Do(admin, "send the digests",
		chromedp.Click(chromedp.CSS(`#send-digests`)), chromedp.WaitVisible(chromedp.CSS(`ul.done`)))
	var digest string
	waitUntil(t, waitLong, "carol's digest", func() bool {
		for _, m := range down.Messages() {
			if len(m.Rcpts) == 1 && m.Rcpts[0] == "carol@example.test" && strings.Contains(string(m.Data), "Auto-Submitted: auto-generated") {
				_, body, _ := strings.Cut(string(m.Data), "\r\n\r\n")
				b, _ := io.ReadAll(quotedprintable.NewReader(strings.NewReader(body)))
				digest = string(b)
				return true
			}
		}
		return false
	})
	link := regexp.MustCompile(`All mail held for you: (\S+)`).FindStringSubmatch(digest)
	if link == nil || !strings.Contains(digest, "Weekly deals") || strings.Contains(digest, "For bob only") {
		t.Fatalf("carol's digest:\n%s", digest)
	}
	carol := br.Tab()
	br.Do(carol, "carol opens her link", chromedp.Navigate(link[1]), chromedp.WaitVisible(chromedp.CSS(`table.quarantine`)))
	text := br.Text(carol)
	if !strings.Contains(text, "Weekly deals") || !strings.Contains(text, "Cheap pills") || strings.Contains(text, "For bob only") || strings.Contains(text, "You won") {
		t.Fatalf("carol's quarantine:\n%s", text)
	}
	br.Screenshot(carol, "enduser")
	// A digest's action link opens a page; nothing happens until the
	// button.
	confirm := regexp.MustCompile(`release:\s+(\S+)`).FindStringSubmatch(digest)
	br.Do(carol, "a release link of the digest", chromedp.Navigate(confirm[1]), chromedp.WaitVisible(chromedp.CSS(`#confirm`)))
	// That link is for its message and action alone: its token does not
	// open carol's quarantine.
	tok := strings.Split(strings.TrimPrefix(confirm[1], base), "/")[2]
	br.Do(carol, "the release link's token on carol's quarantine", chromedp.Navigate(base+"/u/"+tok), chromedp.WaitVisible(chromedp.CSS(`p.problem`)))
	if text := br.Text(carol); !strings.Contains(text, "one message and one action") || strings.Contains(text, "Weekly deals") || strings.Contains(text, "Cheap pills") {
		t.Fatalf("a release link opened more than its message:\n%s", text)
	}

	br.Do(carol, "carol releases the deals to herself",
		chromedp.Navigate(link[1]), chromedp.WaitVisible(chromedp.CSS(`table.quarantine`)),
		chromedp.Click(chromedp.Search(`//a[text()="Weekly deals"]`)), chromedp.WaitVisible(chromedp.CSS(`#release`)),
		chromedp.Click(chromedp.CSS(`#release`)), chromedp.WaitVisible(chromedp.CSS(`ul.done`)))
	if got := downstreamWith(t, down, "deals@shop.example", 1); len(got) != 1 || strings.Join(got[0].Rcpts, ",") != "carol@example.test" {
		t.Fatalf("carol's release: %d deliveries", len(got))
	}
	// She allows the shop and blocks the spammer: the next messages.
	br.Do(carol, "carol allows the shop",
		chromedp.Navigate(link[1]+"/lists"), chromedp.WaitVisible(chromedp.CSS(`input[name=sender]`)),
		chromedp.SendKeys(chromedp.CSS(`input[name=sender]`), "shop.example"),
		chromedp.Click(chromedp.CSS(`form.filters button`)), chromedp.WaitVisible(chromedp.CSS(`ul.done`)))
	br.Do(carol, "carol blocks the spammer",
		chromedp.Navigate(link[1]), chromedp.WaitVisible(chromedp.CSS(`table.quarantine`)),
		chromedp.Click(chromedp.Search(`//a[text()="Cheap pills"]`)), chromedp.WaitVisible(chromedp.CSS(`#block`)),
		chromedp.Click(chromedp.CSS(`#block`)), chromedp.WaitVisible(chromedp.CSS(`ul.done`)))
	if r := c.TrySend("x@spam.example", []string{"carol@example.test"}, spamMessage("pills2@spam.example", "x@spam.example", "carol@example.test", "Pills again")); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("from a sender carol blocked: %s", r)
	}
	queuedAs(t, c.SendMail("news@shop.example", []string{"carol@example.test"}, spamMessage("deals2@shop.example", "news@shop.example", "carol@example.test", "More deals")))
	downstreamWith(t, down, "deals2@shop.example", 1)

	br.Do(admin, "the queue", chromedp.Navigate(base+"/queue"), chromedp.WaitVisible(chromedp.CSS(`h1`)))
	br.Screenshot(admin, "queue")
	br.Do(admin, "the dashboard", chromedp.Navigate(base+"/dashboard"), chromedp.WaitVisible(chromedp.CSS(`div.cards`)))
	if !br.Contains(admin, "decisions", "quarantined", "eve@bad.example", "127.0.0.1", "stage spam") {
		t.Errorf("dashboard:\n%s", br.Text(admin))
	}
	br.Screenshot(admin, "dashboard")
}

// TestUserListsDecideNextMessage, without a browser: an entry an admin
// adds to a recipient's list in the console decides the next message at
// SMTP, and its removal the one after.
func TestUserListsDecideNextMessage(t *testing.T) {
	down := smtptest.NewServer(t)
	const password = "lists test password"
	g, base := consoleGateway(t, down, password)
	jar, _ := cookiejar.New(nil)
	web := &http.Client{Jar: jar, Timeout: waitLong}
	post := func(path string, form url.Values) string {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, base+path, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := web.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("POST %s: %d\n%s", path, resp.StatusCode, b)
		}
		return string(b)
	}
	page := post("/login", url.Values{"name": {"admin"}, "password": {password}})
	csrf := regexp.MustCompile(`name="csrf" value="([^"]+)"`).FindStringSubmatch(page)[1]
	entry := url.Values{"csrf": {csrf}, "owner": {"carol@example.test"}, "kind": {"block"}, "sender": {"@spam.example"}}

	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	send := func(id string) string {
		return c.TrySend("x@spam.example", []string{"carol@example.test"}, message(id, "hello\r\n"))
	}
	queuedAs(t, send("before@spam.example"))
	entry.Set("op", "add")
	post("/lists", entry)
	if r := send("blocked@spam.example"); !strings.HasPrefix(r, "550 5.7.1") {
		t.Fatalf("after the block: %s", r)
	}
	entry.Set("op", "remove")
	post("/lists", entry)
	queuedAs(t, send("after@spam.example"))
	downstreamWith(t, down, "after@spam.example", 1)
}

// consoleSession is a client of the console logged in (or not) as a user.
type consoleSession struct {
	t      *testing.T
	base   string
	client *http.Client
}

func newConsoleSession(t *testing.T, base string) *consoleSession {
	jar, _ := cookiejar.New(nil)
	return &consoleSession{t: t, base: base, client: &http.Client{Jar: jar, Timeout: waitLong,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}}
}

// do sends a request as the console's own pages do and returns the
// status and the body.
func (s *consoleSession) do(method, path string, form url.Values) (int, string) {
	s.t.Helper()
	req, _ := http.NewRequest(method, s.base+path, strings.NewReader(form.Encode()))
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	resp, err := s.client.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// login logs in and reports whether the console took the password.
func (s *consoleSession) login(name, password string) bool {
	s.t.Helper()
	code, _ := s.do(http.MethodPost, "/login", url.Values{"name": {name}, "password": {password}, "next": {"/tracking"}})
	return code == http.StatusSeeOther
}

// in reports whether the session is logged in: /tracking shows, not the
// login form.
func (s *consoleSession) in() bool {
	s.t.Helper()
	code, _ := s.do(http.MethodGet, "/tracking", nil)
	return code == http.StatusOK
}

// TestUserPasswdRemoveEndSessions: `mailgate user passwd` and `mailgate
// user remove` change the config file, and the running gateway reloads
// it: the user's sessions end at once, the other users' go on; the new
// password logs in, the old one and a removed user do not.
func TestUserPasswdRemoveEndSessions(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mailgate.toml")
	hash := func(pw string) string {
		h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		return string(h)
	}
	web := testkit.FreeAddr(t)
	config := fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = %q
[web]
listen = %q

# The first admin.
[[web.user]]
name = "alice"
password_hash = %q

# Read only.
[[web.user]]
name = "bob"
password_hash = %q
role = "auditor"

[[web.user]]
name = "carol"
password_hash = %q
`, filepath.Join(dir, "data"), testkit.FreeAddr(t), web, hash("alice password"), hash("bob password"), hash("carol password"))
	if err := os.WriteFile(file, []byte(config), 0o640); err != nil {
		t.Fatal(err)
	}
	cfg, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Logger: testLogger(t),
		LoadConfig:    func() (*policy.Config, error) { return policy.Load(file) },
		PluginCommand: func(kind string) []string { return []string{mailgateBin, "plugin", kind} }})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	user := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(mailgateBin, append([]string{"user"}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("mailgate user %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	base := "http://" + web
	sessions := map[string]*consoleSession{}
	for _, name := range []string{"alice", "bob", "carol"} {
		sessions[name] = newConsoleSession(t, base)
		if !sessions[name].login(name, name+" password") || !sessions[name].in() {
			t.Fatalf("%s cannot log in", name)
		}
	}

	out := user("alice new password\n", "passwd", "-config", file, "alice")
	if !strings.Contains(out, "the sessions of alice have ended") {
		t.Fatalf("user passwd said:\n%s", out)
	}
	if sessions["alice"].in() {
		t.Error("alice's session outlived her new password")
	}
	if !sessions["bob"].in() || !sessions["carol"].in() {
		t.Error("another user's session ended with alice's password")
	}
	if newConsoleSession(t, base).login("alice", "alice password") {
		t.Error("alice's old password still logs in")
	}
	if !sessions["alice"].login("alice", "alice new password") || !sessions["alice"].in() {
		t.Error("alice's new password does not log in")
	}

	out = user("", "remove", "-config", file, "bob")
	if !strings.Contains(out, "the sessions of bob have ended") {
		t.Fatalf("user remove said:\n%s", out)
	}
	if sessions["bob"].in() || newConsoleSession(t, base).login("bob", "bob password") {
		t.Error("bob was removed, and his session or his password still works")
	}
	if !sessions["alice"].in() || !sessions["carol"].in() {
		t.Error("removing bob ended another user's session")
	}
	after, _ := os.ReadFile(file)
	cfg, err = policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Web.Users) != 2 || cfg.Web.Users[0].Name != "alice" || cfg.Web.Users[1].Name != "carol" ||
		strings.Contains(string(after), "Read only") || !strings.Contains(string(after), "# The first admin.") {
		t.Errorf("the file after remove:\n%s", after)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
}
