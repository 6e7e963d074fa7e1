package console

import (
	"context"
	"io"
	"io/fs"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

// testPassword is the password of the test users. Its hash is bcrypt's
// of the least cost, made once: the hashes users are told to make are
// slow on purpose (policy tests those).
const testPassword = "s3cret pass"

var testHash = sync.OnceValue(func() string {
	h, err := bcrypt.GenerateFromPassword([]byte(testPassword), bcrypt.MinCost)
	if err != nil {
		panic(err)
	}
	return string(h)
})

// testEnv is a console over a data dir of its own, served by httptest.
type testEnv struct {
	t       *testing.T
	c       *Console
	srv     *httptest.Server
	dir     string
	traces  *trace.Log
	backend *fakeBackend
	now     time.Time
	mu      sync.Mutex
}

func (e *testEnv) clock() time.Time {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.now
}

func (e *testEnv) advance(d time.Duration) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.now = e.now.Add(d)
}

// webConfig is the [web] table of the tests, around extra keys.
func newTestEnv(t *testing.T, extra string) *testEnv {
	t.Helper()
	dir := t.TempDir()
	cfg, err := policy.Parse("test.toml", []byte(`hostname = "mx.example.test"
data_dir = "`+dir+`"
[web]
listen = "127.0.0.1:0"
base_url = "https://console.example.test"
hosts = ["mailgate.example.test", "console.localhost"]
`+extra+`
[[web.user]]
name = "admin"
password_hash = "`+testHash()+`"
[[web.user]]
name = "auditor"
password_hash = "`+testHash()+`"
role = "auditor"
`))
	if err != nil {
		t.Fatal(err)
	}
	e := &testEnv{t: t, dir: dir, now: time.Now(), backend: newFakeBackend(t, dir)}
	e.traces, err = trace.Open(filepath.Join(dir, "trace"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.traces.Close() })
	e.serve(cfg)
	return e
}

// serve starts e's console on a store opened on its state.db, as a
// gateway starting does.
func (e *testEnv) serve(cfg *policy.Config) {
	t := e.t
	t.Helper()
	st := openStore(t, e.dir)
	var err error
	e.c, err = New(Options{
		Config:      func() *policy.Config { return cfg },
		Admin:       e.backend,
		Traces:      FileTraces(filepath.Join(e.dir, "trace")),
		Lists:       st.Lists(),
		Audit:       st.Audit(),
		Revocations: st.Revocations(),
		Now:         e.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	e.srv = httptest.NewServer(e.c.Handler())
	t.Cleanup(e.srv.Close)
}

// openStore opens the store of data dir dir until the test ends.
func openStore(t *testing.T, dir string) *sqlstore.Store {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "state.db"), sqlstore.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// restarted is e's console started again: a new Console, with nothing in
// memory, on the same data dir and store, as after a restart or on
// another node sharing the store.
func (e *testEnv) restarted() *testEnv {
	n := &testEnv{t: e.t, dir: e.dir, traces: e.traces, backend: e.backend, now: e.clock()}
	n.serve(e.c.opts.Config())
	return n
}

// browser is a client with a cookie jar that sends the headers a browser
// sends for a page of the console itself.
type browser struct {
	e      *testEnv
	client *http.Client
	host   string // the Host header; "" for the server's address; by default a name of [web] hosts the cookie jar takes as secure
}

func (e *testEnv) browser() *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{e: e, host: "console.localhost", client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error {
		return http.ErrUseLastResponse
	}}}
}

type response struct {
	code int
	body string
	h    http.Header
}

func (b *browser) do(method, path string, form url.Values, hdr map[string]string) response {
	b.e.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequest(method, b.e.srv.URL+path, body)
	if err != nil {
		b.e.t.Fatal(err)
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	if method == http.MethodPost {
		req.Header.Set("Sec-Fetch-Site", "same-origin")
	}
	if b.host != "" {
		req.Host = b.host
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		b.e.t.Fatal(err)
	}
	defer resp.Body.Close()
	rb, _ := io.ReadAll(resp.Body)
	return response{code: resp.StatusCode, body: string(rb), h: resp.Header}
}

// cookies returns the cookies b keeps for its console.
func (b *browser) cookies() []*http.Cookie {
	return b.client.Jar.Cookies(b.secureURL())
}

// setCookies gives b the cookies another browser kept: a copied cookie.
func (b *browser) setCookies(cs []*http.Cookie) { b.client.Jar.SetCookies(b.secureURL(), cs) }

// secureURL is where b's cookies are kept: the client keeps them by the
// Host it sends, and its names are secure (a localhost name, or
// base_url https://).
func (b *browser) secureURL() *url.URL {
	u, _ := url.Parse(b.e.srv.URL)
	u.Scheme = "https"
	if b.host != "" {
		u.Host = b.host
	}
	return u
}

func (b *browser) get(path string) response { return b.do(http.MethodGet, path, nil, nil) }

func (b *browser) post(path string, form url.Values) response {
	return b.do(http.MethodPost, path, form, nil)
}

// login logs in as name and returns the CSRF token of the session.
func (b *browser) login(name string) string {
	b.e.t.Helper()
	r := b.post("/login", url.Values{"name": {name}, "password": {testPassword}, "next": {"/tracking"}})
	if r.code != http.StatusSeeOther || r.h.Get("Location") != "/tracking" {
		b.e.t.Fatalf("login as %s: %d %s\n%s", name, r.code, r.h.Get("Location"), r.body)
	}
	return b.csrf("/tracking")
}

var csrfRE = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf returns the CSRF token the page at path carries.
func (b *browser) csrf(path string) string {
	b.e.t.Helper()
	r := b.get(path)
	m := csrfRE.FindStringSubmatch(r.body)
	if r.code != http.StatusOK || m == nil {
		b.e.t.Fatalf("GET %s: %d, no CSRF token\n%s", path, r.code, r.body)
	}
	return m[1]
}

// fakeBackend is the admin API's backend over a real quarantine and an
// in-memory queue: the console is tested here on its own; the browser
// tests run it on the real gateway.
type fakeBackend struct {
	quar     *quarantine.Store
	spool    *spool.Spool
	mu       sync.Mutex
	queue    map[string]*spool.Envelope
	ops      []string
	released []string
}

func newFakeBackend(t *testing.T, dir string) *fakeBackend {
	q, err := quarantine.Open(filepath.Join(dir, "quarantine"))
	if err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return &fakeBackend{quar: q, spool: sp, queue: map[string]*spool.Envelope{}}
}

var _ admin.Backend = (*fakeBackend)(nil)

func (f *fakeBackend) Queue() ([]*spool.Envelope, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []*spool.Envelope
	for _, e := range f.queue {
		out = append(out, e)
	}
	return out, nil
}

func (f *fakeBackend) QueuedMessage(id string) (*spool.Envelope, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if e, ok := f.queue[id]; ok {
		return e, nil
	}
	return nil, fs.ErrNotExist
}

func (f *fakeBackend) QueueOp(_ context.Context, op, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.ops = append(f.ops, op+" "+id)
	return nil
}

func (f *fakeBackend) Quarantined(ctx context.Context, flt state.Filter) ([]*state.QuarantineRecord, error) {
	return f.quar.List(ctx, flt, time.Now())
}

func (f *fakeBackend) QuarantineRecord(ctx context.Context, id string) (*state.QuarantineRecord, error) {
	return f.quar.Get(ctx, id)
}

func (f *fakeBackend) QuarantineMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	if _, err := f.quar.Get(ctx, id); err != nil {
		return nil, err
	}
	return os.Open(f.quar.MessagePath(id))
}

func (f *fakeBackend) QuarantineRelease(ctx context.Context, id string, rcpts []string) (string, error) {
	env, err := f.quar.Release(ctx, id, f.spool, rcpts...)
	if env == nil {
		return "", err
	}
	f.mu.Lock()
	f.released = append(f.released, id)
	f.mu.Unlock()
	return env.ID, err
}

func (f *fakeBackend) QuarantineDelete(ctx context.Context, id string) error {
	return f.quar.Delete(ctx, id)
}
func (f *fakeBackend) Reload(context.Context) error { return nil }
func (f *fakeBackend) Health() admin.Health         { return admin.Health{{Name: "spool", Status: admin.OK}} }
