package console

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/state"
)

// TestHostChecked: a request for a name the console was not given gets
// 421 and nothing else, on every path: with base_url and hosts, only
// those names are served, not loopback addresses or localhost.
func TestHostChecked(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	for _, host := range []string{"console.example.test", "CONSOLE.example.test.", "mailgate.example.test:8443"} {
		b.host = host
		if r := b.get("/login"); r.code != http.StatusOK {
			t.Errorf("Host %s: %d, want 200", host, r.code)
		}
	}
	for _, host := range []string{"evil.example", "console.example.test.evil.example", "192.0.2.1", "localhost", "127.0.0.1:9", "[::1]", e.srv.Listener.Addr().String()} {
		b.host = host
		for _, path := range []string{"/login", "/tracking", "/static/console.css", "/u/x"} {
			r := b.get(path)
			if r.code != http.StatusMisdirectedRequest {
				t.Errorf("Host %q %s: %d, want 421", host, path, r.code)
			}
			if strings.Contains(r.body, host) {
				t.Errorf("Host %q echoed in the answer", host)
			}
		}
	}
}

// TestSecurityHeaders: every answer forbids inline script, remote
// content, framing and caching, and sends no Referer.
func TestSecurityHeaders(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	for _, path := range []string{"/login", "/tracking", "/nowhere"} {
		r := b.get(path)
		csp := r.h.Get("Content-Security-Policy")
		for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
			if !strings.Contains(csp, want) {
				t.Errorf("%s: CSP %q lacks %q", path, csp, want)
			}
		}
		if strings.Contains(csp, "unsafe-inline") || strings.Contains(csp, "http") {
			t.Errorf("%s: CSP %q allows inline or remote content", path, csp)
		}
		for k, want := range map[string]string{"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
			"X-Frame-Options": "DENY", "Cache-Control": "no-store"} {
			if got := r.h.Get(k); got != want {
				t.Errorf("%s: %s %q, want %q", path, k, got, want)
			}
		}
	}
}

// TestLogin: pages need a session; a wrong password or an unknown name
// gets none; the session cookie is HttpOnly and SameSite=Strict, and
// logout ends it.
func TestLogin(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	if r := b.get("/tracking?from=x"); r.code != http.StatusSeeOther || r.h.Get("Location") != "/login?next=%2Ftracking%3Ffrom%3Dx" {
		t.Fatalf("without a session: %d %s", r.code, r.h.Get("Location"))
	}
	for _, c := range []struct{ name, pw string }{{"admin", "wrong"}, {"nobody", testPassword}, {"admin", ""}} {
		r := b.post("/login", url.Values{"name": {c.name}, "password": {c.pw}})
		if r.code != http.StatusUnauthorized || !strings.Contains(r.body, "Wrong name or password") {
			t.Errorf("login %s/%s: %d\n%s", c.name, c.pw, r.code, r.body)
		}
		if r.h.Get("Set-Cookie") != "" {
			t.Errorf("login %s/%s set a cookie", c.name, c.pw)
		}
	}
	r := b.post("/login", url.Values{"name": {"admin"}, "password": {testPassword}, "next": {"//evil.example/x"}})
	if r.code != http.StatusSeeOther || r.h.Get("Location") != "/tracking" {
		t.Fatalf("login: %d to %q, want /tracking (not another site)", r.code, r.h.Get("Location"))
	}
	ck := r.h.Get("Set-Cookie")
	for _, want := range []string{"mailgate_session=", "HttpOnly", "SameSite=Strict", "Path=/"} {
		if !strings.Contains(ck, want) {
			t.Errorf("cookie %q lacks %s", ck, want)
		}
	}
	token := b.csrf("/tracking")
	if r := b.post("/logout", url.Values{"csrf": {token}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	// The cookie is gone from the jar; one kept elsewhere is dead too.
	b2 := e.browser()
	b2.login("admin")
	stolen := b2.cookies()
	if len(stolen) != 1 {
		t.Fatalf("cookies %v, want the session's", stolen)
	}
	b2.post("/logout", url.Values{"csrf": {b2.csrf("/tracking")}})
	b3 := e.browser()
	b3.setCookies(stolen)
	if r := b3.get("/tracking"); r.code != http.StatusSeeOther {
		t.Errorf("a logged-out session still works: %d", r.code)
	}
}

// TestLogoutHolds: a session cookie copied before its logout is refused
// by the console started again on the same store (a restart, or another
// node of a cluster), though that console knows nothing of the logout in
// memory; the user's other sessions go on.
func TestLogoutHolds(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	b.login("admin")
	keep := e.browser()
	keep.login("admin")
	stolen, kept := b.cookies(), keep.cookies()

	// Before the logout, the cookie works on the other console: the
	// same key signs it.
	other := e.restarted()
	thief := other.browser()
	thief.setCookies(stolen)
	if r := thief.get("/tracking"); r.code != http.StatusOK {
		t.Fatalf("before the logout, on the other console: %d", r.code)
	}
	if r := b.post("/logout", url.Values{"csrf": {b.csrf("/tracking")}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	for name, env := range map[string]*testEnv{"the other console": other, "a restarted console": e.restarted()} {
		thief := env.browser()
		thief.setCookies(stolen)
		if r := thief.get("/tracking"); r.code != http.StatusSeeOther || !strings.HasPrefix(r.h.Get("Location"), "/login") {
			t.Errorf("%s takes the logged-out cookie: %d", name, r.code)
		}
		owner := env.browser()
		owner.setCookies(kept)
		if r := owner.get("/tracking"); r.code != http.StatusOK {
			t.Errorf("%s refuses another session of the user: %d", name, r.code)
		}
	}
}

// direct serves one request by calling e's handler with ctx as the
// request's context, with cookies: a request whose client went away
// (net/http cancels the context of a request whose client half-closed
// its socket), which no HTTP client sends.
func (e *testEnv) direct(ctx context.Context, method, path string, form url.Values, cookies []*http.Cookie) *httptest.ResponseRecorder {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequestWithContext(ctx, method, "http://console.localhost"+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	for _, ck := range cookies {
		req.AddCookie(ck)
	}
	w := httptest.NewRecorder()
	e.c.Handler().ServeHTTP(w, req)
	return w
}

// cancelled is a context cancelled already.
func cancelled() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}

// TestLogoutHoldsOnCancelledRequest: a client that half-closes its
// socket has its request's context cancelled before the console asks the
// store about its session; that must not make a logged-out cookie good.
// On console B (the same store, nothing in memory) the cookie logged out
// on console A is sent to the login form, and a delete with its CSRF
// token is refused and deletes nothing. A change on a cancelled request
// of a good session does not happen either.
func TestLogoutHoldsOnCancelledRequest(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: held\r\n\r\nhi\r\n", time.Now())
	a := e.browser()
	token := a.login("admin")
	stolen := a.cookies()
	if r := a.post("/logout", url.Values{"csrf": {token}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout: %d", r.code)
	}
	b := e.restarted()
	if w := b.direct(cancelled(), http.MethodGet, "/quarantine", nil, stolen); w.Code != http.StatusSeeOther || !strings.HasPrefix(w.Header().Get("Location"), "/login") {
		t.Errorf("GET /quarantine, cancelled, logged-out cookie: %d %s, want 303 to /login", w.Code, w.Header().Get("Location"))
	}
	w := b.direct(cancelled(), http.MethodPost, "/quarantine/"+rec.ID+"/delete", url.Values{"csrf": {token}}, stolen)
	if w.Code != http.StatusForbidden {
		t.Errorf("POST delete, cancelled, logged-out cookie: %d, want 403", w.Code)
	}
	if _, err := e.backend.quar.Get(context.Background(), rec.ID); err != nil {
		t.Fatalf("the message is gone: %v", err)
	}

	live := b.browser()
	liveToken := live.login("admin")
	w = b.direct(cancelled(), http.MethodPost, "/quarantine/"+rec.ID+"/delete", url.Values{"csrf": {liveToken}}, live.cookies())
	if _, err := e.backend.quar.Get(context.Background(), rec.ID); err != nil {
		t.Fatalf("a delete on a cancelled request happened (%d): %v", w.Code, err)
	}
}

// TestLogoutKeptOnCancelledRequest: a logout whose client went away at
// once is kept in the store all the same: a console started again on it
// refuses the cookie.
func TestLogoutKeptOnCancelledRequest(t *testing.T) {
	e := newTestEnv(t, "")
	a := e.browser()
	token := a.login("admin")
	stolen := a.cookies()
	if w := e.direct(cancelled(), http.MethodPost, "/logout", url.Values{"csrf": {token}}, stolen); w.Code != http.StatusSeeOther {
		t.Fatalf("logout: %d", w.Code)
	}
	thief := e.restarted().browser()
	thief.setCookies(stolen)
	if r := thief.get("/tracking"); r.code != http.StatusSeeOther || !strings.HasPrefix(r.h.Get("Location"), "/login") {
		t.Errorf("a restarted console takes the cookie logged out on a cancelled request: %d", r.code)
	}
}

// downRevocations is a store of revocations that does not answer.
type downRevocations struct{ state.Revocations }

var errDown = errors.New("connection refused")

func (downRevocations) SessionRevoked(context.Context, string) (bool, error) { return false, errDown }
func (downRevocations) RevokeSession(context.Context, string, time.Time) error {
	return errDown
}

// awayRevocations is a cluster's store the node knows to be away.
type awayRevocations struct{ state.Revocations }

func (awayRevocations) SessionRevoked(context.Context, string) (bool, error) {
	return false, fmt.Errorf("%w: %w", state.ErrUnavailable, errDown)
}

// TestSessionStoreDown: while the store does not answer, a session
// cannot be told from one logged out on another node: its pages and
// changes get 503 and say why (not the login form, not the page), and a
// change does not happen; a logout still ends it on this node; when the
// store answers again the session works. While the node knows a
// cluster's PostgreSQL is away (state.ErrUnavailable), pages are shown and
// changes still get 503.
func TestSessionStoreDown(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: held\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	token := b.login("admin")
	up := e.c.opts.Revocations
	e.c.opts.Revocations = downRevocations{up}
	r := b.get("/quarantine")
	if r.code != http.StatusServiceUnavailable || !strings.Contains(r.body, "state store does not answer") {
		t.Errorf("GET with the store down: %d\n%s", r.code, r.body)
	}
	if r := b.post("/quarantine/"+rec.ID+"/delete", url.Values{"csrf": {token}}); r.code != http.StatusServiceUnavailable {
		t.Errorf("POST delete with the store down: %d, want 503", r.code)
	}
	if _, err := e.backend.quar.Get(context.Background(), rec.ID); err != nil {
		t.Fatalf("the message is gone: %v", err)
	}
	// A cluster's PostgreSQL the node knows is away: the admin may look,
	// not change.
	e.c.opts.Revocations = awayRevocations{up}
	if r := b.get("/quarantine"); r.code != http.StatusOK || !strings.Contains(r.body, rec.ID) {
		t.Errorf("GET with the cluster's store away: %d, want 200 with the list\n%s", r.code, r.body)
	}
	if r := b.post("/quarantine/"+rec.ID+"/delete", url.Values{"csrf": {token}}); r.code != http.StatusServiceUnavailable {
		t.Errorf("POST delete with the cluster's store away: %d, want 503", r.code)
	}
	if _, err := e.backend.quar.Get(context.Background(), rec.ID); err != nil {
		t.Fatalf("the message is gone: %v", err)
	}
	e.c.opts.Revocations = up
	if r := b.get("/quarantine"); r.code != http.StatusOK {
		t.Errorf("the store back: %d", r.code)
	}
	stolen := b.cookies()
	e.c.opts.Revocations = downRevocations{up}
	if r := b.post("/logout", url.Values{"csrf": {token}}); r.code != http.StatusSeeOther {
		t.Fatalf("logout with the store down: %d", r.code)
	}
	e.c.opts.Revocations = up
	thief := e.browser()
	thief.setCookies(stolen)
	if r := thief.get("/quarantine"); r.code != http.StatusSeeOther {
		t.Errorf("the session logged out while the store was down works on this node: %d", r.code)
	}
}

// TestSessionExpires: a session ends after session_ttl.
func TestSessionExpires(t *testing.T) {
	e := newTestEnv(t, `session_ttl = "1h"`)
	b := e.browser()
	b.login("admin")
	e.advance(59 * time.Minute)
	if r := b.get("/tracking"); r.code != http.StatusOK {
		t.Fatalf("before expiry: %d", r.code)
	}
	e.advance(2 * time.Minute)
	if r := b.get("/tracking"); r.code != http.StatusSeeOther {
		t.Fatalf("after expiry: %d, want the login", r.code)
	}
}

// TestLoginRateLimited: after a burst of attempts from one client, even
// the right password is refused for a while (429), then taken again.
func TestLoginRateLimited(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	for i := range loginBurst {
		if r := b.post("/login", url.Values{"name": {"admin"}, "password": {"guess"}}); r.code != http.StatusUnauthorized {
			t.Fatalf("attempt %d: %d", i, r.code)
		}
	}
	r := b.post("/login", url.Values{"name": {"admin"}, "password": {testPassword}})
	if r.code != http.StatusTooManyRequests {
		t.Fatalf("over the limit: %d, want 429", r.code)
	}
	e.advance(loginEvery)
	b.login("admin")
}

// TestCSRF: a change without the session's token, with another
// session's, or from another site is refused and changes nothing; an
// auditor may not change anything.
func TestCSRF(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	token := b.login("admin")
	other := e.browser()
	otherToken := other.login("admin")
	for _, c := range []struct {
		name string
		form url.Values
		hdr  map[string]string
	}{
		{"no token", url.Values{"op": {"retry"}}, nil},
		{"another session's token", url.Values{"op": {"retry"}, "csrf": {otherToken}}, nil},
		{"from another site", url.Values{"op": {"retry"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}},
		{"from another origin", url.Values{"op": {"retry"}, "csrf": {token}}, map[string]string{"Sec-Fetch-Site": "", "Origin": "https://evil.example"}},
	} {
		r := b.do(http.MethodPost, "/queue/0F3K9RD2C8M1A4QE/retry", c.form, c.hdr)
		if r.code != http.StatusForbidden {
			t.Errorf("%s: %d, want 403", c.name, r.code)
		}
	}
	aud := e.browser()
	audToken := aud.login("auditor")
	if r := aud.post("/queue/0F3K9RD2C8M1A4QE/retry", url.Values{"csrf": {audToken}}); r.code != http.StatusForbidden {
		t.Errorf("auditor: %d, want 403", r.code)
	}
	if len(e.backend.ops) != 0 {
		t.Fatalf("refused requests did something: %v", e.backend.ops)
	}
	if r := b.post("/queue/0F3K9RD2C8M1A4QE/retry", url.Values{"csrf": {token}}); r.code != http.StatusOK {
		t.Fatalf("with the token: %d\n%s", r.code, r.body)
	}
	if len(e.backend.ops) != 1 {
		t.Fatalf("ops %v, want the retry", e.backend.ops)
	}
}

// TestSignedLink: a link names one recipient, what it allows and its
// generation until it expires; a link changed in any part, or made with
// another key, is refused.
func TestSignedLink(t *testing.T) {
	e := newTestEnv(t, `link_ttl = "24h"`)
	now := e.clock()
	want := Link{Rcpt: "bob@example.test", Scope: "release", ID: "0F3K9RD2C8M1A4QE", Gen: 3, Expires: now.Add(24 * time.Hour).Truncate(time.Second)}
	tok := e.c.keys.newLink(want)
	l, err := e.c.keys.checkLink(tok, now)
	if err != nil || l != want {
		t.Fatalf("checkLink = %+v, %v; want %+v", l, err, want)
	}
	if _, err := e.c.keys.checkLink(tok, now.Add(24*time.Hour)); err != errExpiredLink {
		t.Errorf("at expiry: %v, want expired", err)
	}
	parts := strings.Split(tok, ".")
	with := func(i int, v string) string {
		p := slices.Clone(parts)
		p[i] = v
		return strings.Join(p, ".")
	}
	for _, bad := range []string{
		with(0, b64([]byte("eve@example.test"))),
		with(1, "all"),
		with(1, "block"),
		with(2, b64([]byte("0F3K9RD2C8M1A4QF"))),
		with(3, "4"),
		with(4, "99999999999"),
		with(5, parts[5][:len(parts[5])-2]+"AA"),
		// Signed, but not a link this console makes.
		e.c.keys.newLink(Link{Rcpt: "bob@example.test", Scope: "delete", ID: "X", Expires: want.Expires}),
		e.c.keys.newLink(Link{Rcpt: "bob@example.test", Scope: scopeAll, ID: "X", Expires: want.Expires}),
		e.c.keys.newLink(Link{Rcpt: "bob@example.test", Scope: "view", Expires: want.Expires}),
		e.c.keys.newLink(Link{Rcpt: "not an address", Scope: scopeAll, Expires: want.Expires}),
		newKeys([]byte("another secret of sixteen")).newLink(want),
		"", "x.y", tok + ".x",
	} {
		if _, err := e.c.keys.checkLink(bad, now); err != errBadLink {
			t.Errorf("checkLink(%q): %v, want not valid", bad, err)
		}
	}
	link, _, err := e.c.newLinks(context.Background(), "bob@example.test")
	if err != nil {
		t.Fatal(err)
	}
	if u := link(scopeAll, ""); !strings.HasPrefix(u, "https://console.example.test/u/") {
		t.Errorf("a link %q", u)
	}
	// A session token is no link, and a link no session.
	if _, err := e.c.keys.checkLink(e.c.keys.newSession(e.c.opts.Config().Web.Users[0], now.Add(time.Hour)), now); err == nil {
		t.Error("a session token works as a link")
	}
	if _, ok := e.c.keys.checkSession(tok, e.c.opts.Config().Web.Users, now); ok {
		t.Error("a link works as a session")
	}
}

// TestSecretKept: the signing key is made once and read again at the
// next start, so links and sessions outlive a restart.
func TestSecretKept(t *testing.T) {
	path := t.TempDir() + "/web/secret"
	a, err := loadSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	b, err := loadSecret(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(a) != string(b) || len(a) != 32 {
		t.Fatalf("secret not kept: %x then %x", a, b)
	}
}

// TestPostBodyBounded: before any login, a POST is a small urlencoded
// form or nothing: multipart (which Go would spool to a temporary file)
// gets 415, a form over 64 KiB 413, and neither reaches the login.
func TestPostBodyBounded(t *testing.T) {
	e := newTestEnv(t, "")
	post := func(ctype string, body io.Reader) int {
		t.Helper()
		req, _ := http.NewRequest(http.MethodPost, e.srv.URL+"/login", body)
		req.Host = "console.example.test"
		req.Header.Set("Content-Type", ctype)
		req.Header.Set("Sec-Fetch-Site", "same-origin")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	var mp bytes.Buffer
	mw := multipart.NewWriter(&mp)
	mw.WriteField("name", "admin")
	f, _ := mw.CreateFormFile("upload", "big.bin")
	f.Write(bytes.Repeat([]byte("x"), 1<<20))
	mw.Close()
	if code := post(mw.FormDataContentType(), &mp); code != http.StatusUnsupportedMediaType {
		t.Errorf("multipart POST /login: %d, want 415", code)
	}
	big := "name=admin&password=" + strings.Repeat("x", 65<<10)
	if code := post("application/x-www-form-urlencoded", strings.NewReader(big)); code != http.StatusRequestEntityTooLarge {
		t.Errorf("a 65 KiB form: %d, want 413", code)
	}
	if code := post("application/x-www-form-urlencoded; charset=utf-8", strings.NewReader("name=admin&password=x")); code != http.StatusUnauthorized {
		t.Errorf("a small form: %d, want 401", code)
	}
}

// TestSafeNext: after the login, only a path of this console: no other
// host however spelt (tabs and backslashes browsers drop or turn into
// slashes, schemes, control bytes).
func TestSafeNext(t *testing.T) {
	for next, want := range map[string]string{
		"/tracking?from=x":       "/tracking?from=x",
		"/quarantine/ABC":        "/quarantine/ABC",
		"/%09/evil.example":      "/tracking",
		"/\t/evil.example":       "/tracking",
		"//evil.example/x":       "/tracking",
		"/\\evil.example":        "/tracking",
		"/%5Cevil.example":       "/tracking",
		"https://evil.example/":  "/tracking",
		"javascript:alert(1)":    "/tracking",
		"/a\x7fb":                "/tracking",
		"/%0d%0aSet-Cookie:%20x": "/tracking",
		"":                       "/tracking",
		"tracking":               "/tracking",
	} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

// TestSecretNotReadableByOthers: a key file the group or others may read
// is refused, with the config position, the file and the chmod to run.
func TestSecretNotReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	secret := dir + "/secret"
	os.WriteFile(secret, []byte(strings.Repeat("ab", 32)+"\n"), 0o644)
	os.Chmod(secret, 0o644)
	cfg, err := policy.Parse("test.toml", []byte("hostname = \"mx.example.test\"\ndata_dir = \""+dir+"\"\n[web]\nlisten = \"127.0.0.1:0\"\nsecret_file = \""+secret+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Config: func() *policy.Config { return cfg }, Revocations: openStore(t, dir).Revocations()}
	_, err = New(opts)
	want := "test.toml:5: web.secret_file: " + secret + " may be read by others than its owner (mode 0644), and it signs sessions and links; run: chmod 600 " + secret
	if err == nil || err.Error() != want {
		t.Fatalf("New = %v\nwant %s", err, want)
	}
	os.Chmod(secret, 0o600)
	if _, err := New(opts); err != nil {
		t.Fatal(err)
	}
}

// TestHostWithoutNames: without base_url or hosts, the console answers to
// the address connected to and, on loopback, localhost; not to a name.
func TestHostWithoutNames(t *testing.T) {
	e := newTestEnv(t, "")
	e.c.opts.Config().Web.BaseURL, e.c.opts.Config().Web.Hosts = "", nil
	b := e.browser()
	for host, want := range map[string]int{"localhost": 200, "[::1]": 200, e.srv.Listener.Addr().String(): 200, "evil.example": 421} {
		b.host = host
		if r := b.get("/login"); r.code != want {
			t.Errorf("Host %s: %d, want %d", host, r.code, want)
		}
	}
}

// TestTrustedProxies: behind a proxy of [web] trusted_proxies the
// client's address is the one X-Forwarded-For gives, so one client's
// failures do not lock out another behind the same proxy; from a peer
// that is not a proxy the header is ignored.
func TestTrustedProxies(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		extra := ""
		if trusted {
			extra = `trusted_proxies = ["127.0.0.0/8"]`
		}
		e := newTestEnv(t, extra)
		b := e.browser()
		fail := func(xff string) int {
			return b.do(http.MethodPost, "/login", url.Values{"name": {"admin"}, "password": {"guess"}}, map[string]string{"X-Forwarded-For": xff}).code
		}
		for range loginBurst {
			fail("198.51.100.7, 192.0.2.1")
		}
		if code := fail("192.0.2.1"); code != http.StatusTooManyRequests {
			t.Errorf("trusted %v: the client past the limit: %d, want 429", trusted, code)
		}
		code := fail("192.0.2.2")
		if trusted && code != http.StatusUnauthorized {
			t.Errorf("another client behind the proxy: %d, want 401", code)
		}
		if !trusted && code != http.StatusTooManyRequests {
			t.Errorf("X-Forwarded-For from a peer not trusted was believed: %d", code)
		}
	}
}

// countingRevocations counts the look-ups of sessions in the store.
type countingRevocations struct {
	state.Revocations
	lookups atomic.Int64
}

func (c *countingRevocations) SessionRevoked(ctx context.Context, id string) (bool, error) {
	c.lookups.Add(1)
	return c.Revocations.SessionRevoked(ctx, id)
}

// TestErrorPageOneLookup: a page that fails (no such trace, a refused
// change) asks the store about the session once, as any page does, and
// still shows the user's menu.
func TestErrorPageOneLookup(t *testing.T) {
	e := newTestEnv(t, "")
	b := e.browser()
	token := b.login("admin")
	counted := &countingRevocations{Revocations: e.c.opts.Revocations}
	e.c.opts.Revocations = counted
	for _, req := range []struct {
		method, path string
		form         url.Values
		code         int
	}{
		{http.MethodGet, "/message/NOSUCH00000001", nil, http.StatusNotFound},
		{http.MethodPost, "/queue/NOSUCH00000001/frobnicate", url.Values{"csrf": {token}}, http.StatusNotFound},
		{http.MethodPost, "/queue/bulk", url.Values{"csrf": {"forged"}}, http.StatusForbidden},
	} {
		before := counted.lookups.Load()
		r := b.do(req.method, req.path, req.form, nil)
		if r.code != req.code || !strings.Contains(r.body, "admin (admin)") {
			t.Errorf("%s %s: %d, want %d with the user's menu\n%s", req.method, req.path, r.code, req.code, r.body)
		}
		if n := counted.lookups.Load() - before; n != 1 {
			t.Errorf("%s %s: the store was asked about the session %d times, want 1", req.method, req.path, n)
		}
	}
}
