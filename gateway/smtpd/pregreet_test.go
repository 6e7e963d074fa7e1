package smtpd

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/stages/testkit"
)

// testClock is the pre-greet cache's clock in tests: it moves only when
// told. The delay itself is real time (a socket deadline), kept short.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

const pregreetDelay = 200 * time.Millisecond

const pregreetConf = "[server]\npregreet_delay = \"200ms\"\npregreet_good_ttl = \"24h\"\npregreet_bad_ttl = \"1h\"\n"

// servePregreet serves pregreetConf (and extra) on data directory dir
// with clock.
func servePregreet(t *testing.T, dir string, clock *testClock, extra string) *testServer {
	t.Helper()
	return serveOpts(t, dir, pregreetConf+extra, nil, func(o *Options) { o.Clock = clock.now })
}

func newTestClock() *testClock { return &testClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

// rawDial connects without reading anything.
func rawDial(t *testing.T, ts *testServer) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return testkit.NewSMTPClient(t, conn)
}

// refusedEarly checks that c is answered 554 5.7.1 and nothing else (no
// banner before it), then closed.
func refusedEarly(t *testing.T, c *client) {
	t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(time.Minute))
	if r := c.Rest(); r != "554 5.7.1 Access denied\r\n" {
		t.Fatalf("got %q; want 554 5.7.1 alone, then the connection closed", r)
	}
}

// patient waits for the banner, measures that it came after the delay,
// and greets in turn.
func patient(t *testing.T, ts *testServer) *client {
	t.Helper()
	start := time.Now()
	c := rawDial(t, ts)
	c.Expect("220 ")
	if d := time.Since(start); d < pregreetDelay {
		t.Fatalf("banner after %v, before the delay %v", d, pregreetDelay)
	}
	c.Cmd("EHLO client.test", "250")
	return c
}

// TestPregreetEarlyTalker: a client that talks before the banner is
// refused with 554 and no banner, and refused at once while it is cached
// as bad, even when it waits; after pregreet_bad_ttl it is tested again.
func TestPregreetEarlyTalker(t *testing.T) {
	clock := newTestClock()
	ts := servePregreet(t, t.TempDir(), clock, "")
	early := rawDial(t, ts)
	early.Send("EHLO spam.test\r\n")
	refusedEarly(t, early)

	refusedEarly(t, rawDial(t, ts)) // says nothing, cached bad
	clock.add(time.Hour)
	c := patient(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
}

// TestPregreetPatientClientCachedGood: a client that waits for the banner
// and greets in turn passes, and is not tested again for
// pregreet_good_ttl: talking first then is not held against it.
func TestPregreetPatientClientCachedGood(t *testing.T) {
	clock := newTestClock()
	ts := servePregreet(t, t.TempDir(), clock, "")
	patient(t, ts).Cmd("QUIT", "221")

	again := rawDial(t, ts)
	again.Send("EHLO client.test\r\n") // before the banner: not tested
	again.Expect("220 ")
	again.Expect("250")

	clock.add(24 * time.Hour)
	early := rawDial(t, ts)
	early.Send("EHLO client.test\r\n")
	refusedEarly(t, early)
}

// TestPregreetPipelining: PIPELINING is offered in the EHLO reply (RFC
// 2920), so a client that sends more after its HELO or EHLO before the
// reply is refused and cached as bad; one that pipelines after the EHLO
// reply is fine.
func TestPregreetPipelining(t *testing.T) {
	for _, greet := range []string{"EHLO", "HELO"} {
		t.Run(greet, func(t *testing.T) {
			ts := servePregreet(t, t.TempDir(), newTestClock(), "")
			c := rawDial(t, ts)
			c.Expect("220 ")
			c.Send(greet + " client.test\r\nMAIL FROM:<a@sender.test>\r\n")
			refusedEarly(t, c)
			refusedEarly(t, rawDial(t, ts)) // cached bad
		})
	}
	ts := servePregreet(t, t.TempDir(), newTestClock(), "")
	c := patient(t, ts)
	c.Send("MAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\n")
	c.Expect("250")
	c.Expect("250")
}

// TestPregreetTrustedNetworks: trusted_networks are not tested.
func TestPregreetTrustedNetworks(t *testing.T) {
	ts := servePregreet(t, t.TempDir(), newTestClock(), "trusted_networks = [\"127.0.0.0/8\"]\n")
	c := rawDial(t, ts)
	c.Send("EHLO client.test\r\nMAIL FROM:<a@sender.test>\r\n")
	c.Expect("220 ")
	c.Expect("250")
	c.Expect("250")
}

// TestPregreetCacheSurvivesRestart: the cache is a store under data_dir:
// a new server on the same directory refuses the client cached as bad at
// once and lets the one cached as good through untested. A corrupt store
// file is dropped, not fatal; a directory holding another store is
// refused with what to do.
func TestPregreetCacheSurvivesRestart(t *testing.T) {
	dir, clock := t.TempDir(), newTestClock()
	first := servePregreet(t, dir, clock, "")
	early := rawDial(t, first)
	early.Send("EHLO spam.test\r\n")
	refusedEarly(t, early)

	second := servePregreet(t, dir, clock, "")
	refusedEarly(t, rawDial(t, second))

	// Garbage in every bucket file: the records are dropped, the client
	// tested again.
	files, _ := filepath.Glob(filepath.Join(dir, "pregreet", "[0-9a-f][0-9a-f][0-9a-f]"))
	if len(files) == 0 {
		t.Fatal("no cache file under data_dir/pregreet")
	}
	for _, f := range files {
		os.WriteFile(f, []byte(strings.Repeat("garbage!", 8)), 0o600)
	}
	third := servePregreet(t, dir, clock, "")
	patient(t, third)
	again := rawDial(t, third)
	again.Send("EHLO client.test\r\n")
	again.Expect("220 ")

	os.WriteFile(filepath.Join(dir, "pregreet", "format"), []byte("mailgate greylist store 1\n"), 0o600)
	_, err := door.OpenPregreet(nil, dir, clock.now, nil, nil)
	if err == nil || !strings.Contains(err.Error(), "move the directory away") {
		t.Fatalf("a store of another kind: %v", err)
	}
}
