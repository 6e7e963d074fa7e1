package console

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
)

// browserFrom is a browser whose connections come from the loopback
// address ip (127.0.0.2, …): another client to the console.
func (e *testEnv) browserFrom(ip string) *browser {
	b := e.browser()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}}
	b.client.Transport = &http.Transport{DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.DialContext(ctx, network, addr)
	}}
	return b
}

// TestLoginLimitPerAddress: failures from one address lock that address
// out for the name, not the name's owner elsewhere; a success forgets the
// failures; only failures count.
func TestLoginLimitPerAddress(t *testing.T) {
	e := newTestEnv(t, "")
	attacker, owner := e.browserFrom("127.0.0.2"), e.browserFrom("127.0.0.3")
	for range loginBurst {
		attacker.post("/login", url.Values{"name": {"admin"}, "password": {"guess"}})
	}
	if r := attacker.post("/login", url.Values{"name": {"admin"}, "password": {testPassword}}); r.code != http.StatusTooManyRequests {
		t.Fatalf("the attacker's address past the limit: %d, want 429", r.code)
	}
	owner.login("admin") // not locked out
	// Successes do not count, and one forgets the failures before it.
	for range 2 * loginBurst {
		owner.login("admin")
	}
	for range loginBurst - 1 {
		owner.post("/login", url.Values{"name": {"admin"}, "password": {"typo"}})
	}
	owner.login("admin")
	for range loginBurst - 1 {
		owner.post("/login", url.Values{"name": {"admin"}, "password": {"typo"}})
	}
	owner.login("admin")
}

// TestLoginLimiter: the per-name count only delays, growing to a bound;
// an IPv6 client counts as its /64; a refused attempt adds nothing.
func TestLoginLimiter(t *testing.T) {
	l := newLoginLimiter()
	now := time.Now()
	var prev time.Duration
	for i := range nameFree + 40 {
		a := netip.AddrFrom4([4]byte{192, 0, 2, byte(i)})
		ok, wait := l.allow(a, "admin", now)
		if !ok {
			t.Fatalf("attempt %d from a new address refused", i)
		}
		if wait < prev || wait > nameMaxDelay {
			t.Fatalf("attempt %d: wait %v after %v", i, wait, prev)
		}
		prev = wait
		l.failed(a, "admin", now)
	}
	if prev != nameMaxDelay {
		t.Errorf("the delay reached %v, want %v", prev, nameMaxDelay)
	}
	a, b := netip.MustParseAddr("2001:db8:1:2::1"), netip.MustParseAddr("2001:db8:1:2:ffff::9")
	for range loginBurst {
		l.failed(a, "bob", now)
	}
	if ok, _ := l.allow(b, "bob", now); ok {
		t.Errorf("another address of the same /64 allowed")
	}
	if ok, _ := l.allow(netip.MustParseAddr("2001:db8:1:3::1"), "bob", now); !ok {
		t.Errorf("another /64 refused")
	}
	if ok, _ := l.allow(a, "bob", now.Add(loginEvery)); !ok {
		t.Errorf("still refused after loginEvery")
	}
}

// TestLoginLongName: a name longer than any account's is refused at once:
// not shown back, not logged, not counted against anyone.
func TestLoginLongName(t *testing.T) {
	e := newTestEnv(t, "")
	var logged strings.Builder
	e.c.log = slog.New(slog.NewTextHandler(&logged, nil))
	b := e.browser()
	long := "admin" + strings.Repeat("X", 60)
	for range loginBurst + 1 {
		r := b.post("/login", url.Values{"name": {long}, "password": {"guess"}})
		if r.code != http.StatusUnauthorized || strings.Contains(r.body, "XXXX") {
			t.Fatalf("a %d-byte name: %d, echoed: %v", len(long), r.code, strings.Contains(r.body, "XXXX"))
		}
	}
	if strings.Contains(logged.String(), "XXXX") {
		t.Errorf("the long name was logged:\n%s", logged.String())
	}
	if n := len(e.c.logins.pairs) + len(e.c.logins.names); n != 0 {
		t.Errorf("the long name was counted: %d keys", n)
	}
}

// TestDummyHashAsUserAdd: an unknown name is checked against a hash of
// the algorithm and parameters `mailgate user add` uses, so that it takes
// as long as a known one.
func TestDummyHashAsUserAdd(t *testing.T) {
	real, err := policy.HashPassword("x")
	if err != nil {
		t.Fatal(err)
	}
	params := func(h string) string { return strings.Join(strings.Split(h, "$")[:4], "$") }
	if got, want := params(dummyHash().String()), params(real); got != want {
		t.Errorf("dummy hash %s, want %s as mailgate user add", got, want)
	}
}

// TestServerBounded: the console takes maxWebConns connections at a time;
// one more waits until another closes; the server has read, write and
// header bounds.
func TestServerBounded(t *testing.T) {
	e := newTestEnv(t, "")
	s, err := e.c.Serve()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.srv.ReadTimeout != 15*time.Second || s.srv.WriteTimeout != 60*time.Second || s.srv.MaxHeaderBytes != 64<<10 {
		t.Errorf("server read %v, write %v, header %d", s.srv.ReadTimeout, s.srv.WriteTimeout, s.srv.MaxHeaderBytes)
	}
	addr := s.Addr().String()
	// Each held connection sends a request and reads its answer, so it
	// is known to be accepted; keep-alive keeps it open.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	req := "GET /login HTTP/1.1\r\nHost: console.example.test\r\n\r\n"
	for range maxWebConns {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, req)
		if _, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil {
			t.Fatalf("connection %d: %v", len(held), err)
		}
	}
	extra, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	io.WriteString(extra, req)
	extra.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	if _, err := extra.Read(make([]byte, 1)); err == nil {
		t.Fatalf("connection %d answered while %d were open", maxWebConns+1, maxWebConns)
	}
	held[0].Close()
	extra.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := http.ReadResponse(bufio.NewReader(extra), nil); err != nil {
		t.Fatalf("connection %d after one closed: %v", maxWebConns+1, err)
	}
}
