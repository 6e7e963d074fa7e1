package admin

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
)

// fake is a Backend that records calls and fails as told.
type fake struct {
	calls  []string
	filter state.Filter
	health Health
}

func (f *fake) Queue() ([]*spool.Envelope, error) { return []*spool.Envelope{{ID: "Q1"}}, nil }
func (f *fake) QueuedMessage(id string) (*spool.Envelope, error) {
	return nil, fmt.Errorf("load %s: %w", id, spool.ErrNotFound)
}
func (f *fake) QueueOp(_ context.Context, op, id string) error {
	f.calls = append(f.calls, op+" "+id)
	return nil
}
func (f *fake) Quarantined(_ context.Context, flt state.Filter) ([]*state.QuarantineRecord, error) {
	f.filter = flt
	return nil, nil
}
func (f *fake) QuarantineRecord(_ context.Context, id string) (*state.QuarantineRecord, error) {
	return &state.QuarantineRecord{ID: id}, nil
}
func (f *fake) QuarantineMessage(_ context.Context, id string) (io.ReadCloser, error) {
	return io.NopCloser(strings.NewReader("Subject: x\r\n\r\nbody\r\n")), nil
}
func (f *fake) QuarantineRelease(_ context.Context, id string, _ []string) (string, error) {
	return "", fmt.Errorf("quarantine %s: %w as Q2", id, state.ErrAlreadyReleased)
}
func (f *fake) QuarantineDelete(_ context.Context, id string) error { return nil }
func (f *fake) Reload(context.Context) error {
	return errors.New("reload: server.listen changed: restart needed")
}
func (f *fake) Health() Health { return f.health }

// listen is the [admin] listen of the handlers under test.
const listen = "127.0.0.1:8025"

func do(t *testing.T, h http.Handler, method, target, remote string, header bool) (int, string) {
	t.Helper()
	return doHost(t, h, method, target, remote, listen, header)
}

func doHost(t *testing.T, h http.Handler, method, target, remote, host string, header bool) (int, string) {
	t.Helper()
	r := httptest.NewRequest(method, target, nil)
	r.RemoteAddr = remote
	r.Host = host
	// The address the client reached, as http.Server tells a handler.
	r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8025}))
	if header {
		r.Header.Set(Header, "1")
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w.Code, w.Body.String()
}

func TestHandler(t *testing.T) {
	b := &fake{}
	h := Handler(b, http.NotFoundHandler(), listen)
	const local = "127.0.0.1:5555"
	for _, tc := range []struct {
		method, target, remote string
		header                 bool
		code                   int
		body                   string
	}{
		{"GET", "/api/queue", "192.0.2.7:5555", true, 403, "loopback clients only"},
		{"GET", "/api/queue", "[::1]:5555", false, 200, `"id":"Q1"`},
		{"POST", "/api/queue/Q1/hold", local, false, 403, "missing header Mailgate-Admin: 1"},
		{"POST", "/api/queue/Q1/hold", local, true, 200, `{"ok":true}`},
		{"POST", "/api/queue/Q1/explode", local, true, 404, "expect retry, hold or release"},
		{"DELETE", "/api/queue/Q1", local, true, 200, `{"ok":true}`},
		{"GET", "/api/queue/NOPE", local, false, 404, "no such message in the queue"},
		{"POST", "/api/quarantine/Q1/release", local, true, 409, "already released as Q2"},
		{"GET", "/api/quarantine/Q1/message", local, false, 200, "Subject: x\r\n"},
		{"GET", "/api/quarantine?older=bogus", local, false, 400, "older"},
		{"POST", "/api/reload", local, true, 500, "restart needed"},
		{"GET", "/healthz", "192.0.2.7:5555", false, 200, "ok\n"},
	} {
		code, body := do(t, h, tc.method, tc.target, tc.remote, tc.header)
		if code != tc.code || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s from %s: %d %q, want %d with %q", tc.method, tc.target, tc.remote, code, body, tc.code, tc.body)
		}
	}
	if got := strings.Join(b.calls, ","); got != "hold Q1,delete Q1" {
		t.Errorf("queue operations %q", got)
	}
	do(t, h, "GET", "/api/quarantine?from=a%40x&rcpt=b&stage=av&older=2h&newer=72h", local, false)
	if want := (state.Filter{From: "a@x", Rcpt: "b", Stage: "av", OlderThan: 2 * time.Hour, NewerThan: 72 * time.Hour}); b.filter != want {
		t.Errorf("filter %+v, want %+v", b.filter, want)
	}
	b.health = Health{
		{Name: "spool", Status: Down, Detail: "not writable: disk full"},
		{Name: "delivery", Status: OK, Detail: "running"},
		{Name: "stage spam", Status: Degraded, Detail: "not running, restarting; on_error skip"},
	}
	want := "unhealthy: spool: not writable: disk full\n" +
		"spool: down: not writable: disk full\ndelivery: ok: running\nstage spam: degraded: not running, restarting; on_error skip\n"
	if code, body := do(t, h, "GET", "/healthz", local, false); code != 503 || body != want {
		t.Errorf("unhealthy: %d %q, want 503 %q", code, body, want)
	}
	b.health = b.health[1:]
	if code, body := do(t, h, "GET", "/healthz", local, false); code != 200 || !strings.HasPrefix(body, "ok\n") {
		t.Errorf("degraded: %d %q, want 200 ok", code, body)
	}
}

// TestHostGuard: a request addressed to another name than the
// listener's (a DNS rebinding page) gets 421 on every path and changes
// nothing; the listener's own names and addresses are served.
func TestHostGuard(t *testing.T) {
	const local = "127.0.0.1:5555"
	for _, tc := range []struct {
		listen string
		good   []string
		bad    []string
	}{
		{"127.0.0.1:8025",
			[]string{"127.0.0.1:8025", "localhost:8025", "LOCALHOST:8025", "[::1]:8025"},
			[]string{"rebind.evil.example", "rebind.evil.example:8025", "127.0.0.1:9999", "127.0.0.1", "localhost", "localhost.:8025", "", "mx.example.test:8025", "127.0.0.1.evil.example:8025"}},
		{"localhost:8025",
			[]string{"localhost:8025", "127.0.0.1:8025"},
			[]string{"rebind.evil.example:8025"}},
		{"admin.example.test:8025",
			[]string{"admin.example.test:8025", "Admin.Example.Test:8025", "127.0.0.1:8025"},
			[]string{"rebind.evil.example:8025", "admin.example.test.evil:8025"}},
	} {
		b := &fake{}
		h := Handler(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "metrics") }), tc.listen)
		for _, host := range tc.good {
			for _, path := range []string{"/api/queue", "/healthz", "/metrics"} {
				if code, body := doHost(t, h, "GET", path, local, host, false); code != 200 {
					t.Errorf("listen %s, Host %q: GET %s = %d %q, want 200", tc.listen, host, path, code, body)
				}
			}
		}
		for _, host := range tc.bad {
			for _, path := range []string{"/api/queue", "/api/quarantine/Q1/message", "/healthz", "/metrics"} {
				code, body := doHost(t, h, "GET", path, local, host, false)
				if code != http.StatusMisdirectedRequest || strings.Contains(body, "Q1") || strings.Contains(body, "metrics") ||
					(host != "" && strings.Contains(body, host)) {
					t.Errorf("listen %s, Host %q: GET %s = %d %q, want 421 with a generic body", tc.listen, host, path, code, body)
				}
			}
			for _, path := range []string{"/api/quarantine/Q1/release", "/api/queue/Q1/hold", "/api/reload"} {
				if code, _ := doHost(t, h, "POST", path, local, host, true); code != http.StatusMisdirectedRequest {
					t.Errorf("listen %s, Host %q: POST %s = %d, want 421", tc.listen, host, path, code)
				}
			}
		}
		if len(b.calls) != 0 {
			t.Errorf("listen %s: misdirected requests reached the backend: %v", tc.listen, b.calls)
		}
	}
}

// TestClient: the client sends what the handler needs and turns error
// answers into errors with the server's text.
func TestClient(t *testing.T) {
	b := &fake{}
	srv := httptest.NewServer(Handler(b, http.NotFoundHandler(), "127.0.0.1:0"))
	defer srv.Close()
	c, err := NewClient(strings.TrimPrefix(srv.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := c.QueueOp(ctx, "retry", "Q1"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.QuarantineRelease(ctx, "Q1"); err == nil || !strings.Contains(err.Error(), "already released as Q2") {
		t.Fatalf("release: %v", err)
	}
	if _, err := c.QueuedMessage(ctx, "NOPE"); !NotFound(err) {
		t.Fatalf("show of an unknown ID: %v", err)
	}
	var msg strings.Builder
	if err := c.QuarantineMessage(ctx, "Q1", &msg); err != nil || msg.String() != "Subject: x\r\n\r\nbody\r\n" {
		t.Fatalf("message %q, %v", msg.String(), err)
	}
	if _, err := c.Quarantined(ctx, state.Filter{From: "a@x", OlderThan: time.Hour}); err != nil {
		t.Fatal(err)
	}
	if b.filter.From != "a@x" || b.filter.OlderThan != time.Hour {
		t.Fatalf("filter sent %+v", b.filter)
	}
	if c, _ := NewClient("0.0.0.0:8025"); c.base != "http://127.0.0.1:8025" {
		t.Fatalf("unspecified address reached at %s", c.base)
	}
}
