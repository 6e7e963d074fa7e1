package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

const (
	rateDeferred = "450 4.7.1 Rate limit exceeded, try again later"
	rateClosed   = "421 4.7.0 Rate limit exceeded, closing connection"
)

// testClock is the rate limits' clock in these tests: it stands still
// unless the test moves it, so no event's worth refills while the test
// runs, however slow the machine.
type testClock struct{ ns atomic.Int64 }

func newTestClock() *testClock {
	c := &testClock{}
	c.ns.Store(time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *testClock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *testClock) Add(d time.Duration) { c.ns.Add(int64(d)) }

func startRateLimited(t *testing.T, config string, clock *testClock) *gateway.Gateway {
	t.Helper()
	return startGatewayOpts(t, config, gateway.Options{Logger: testLogger(t), RateLimitNow: clock.Now})
}

// TestRateLimitHoldsUnderLoad: a limit of burst 5 and one message a
// minute, under 20 messages sent at once over 4 connections, takes 5 and
// defers 15 at MAIL with 450 4.7.1; a minute later it takes one more;
// ten minutes later, the burst of 5 again, not more. The downstream
// server gets exactly what was taken, and the refusals are counted by
// rule.
func TestRateLimitHoldsUnderLoad(t *testing.T) {
	down := smtptest.NewServer(t)
	clock := newTestClock()
	g := startRateLimited(t, routeTo(down, "dest.test")+`
[[ratelimit]]
name = "per-client"
key = "client_ip"
rate = 1
per = "1m"
burst = 5
`, clock)
	if v, ok := scrape(t, g)[`mailgate_ratelimit_exceeded_total{rule="per-client"}`]; !ok || v != 0 {
		t.Fatalf("exceeded_total of per-client at start: %v, %v; want 0", v, ok)
	}

	// send sends n messages over conns connections at once and returns
	// how many were taken; every other reply must be the deferral.
	var sent atomic.Int32
	send := func(conns, n int) int {
		var (
			wg    sync.WaitGroup
			taken atomic.Int32
		)
		for range conns {
			wg.Go(func() {
				c := dial(t, g.SMTPAddrs()[0])
				c.Cmd("EHLO client.test", "250")
				for range n {
					id := fmt.Sprintf("load-%d@test", sent.Add(1))
					switch r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n")); {
					case strings.HasPrefix(r, "250"):
						taken.Add(1)
					case r != rateDeferred:
						t.Errorf("reply %q, want 250 or %q", r, rateDeferred)
					}
				}
				c.Cmd("QUIT", "221")
			})
		}
		wg.Wait()
		return int(taken.Load())
	}
	if n := send(4, 5); n != 5 {
		t.Fatalf("%d of 20 taken at once, want the burst of 5", n)
	}
	clock.Add(time.Minute)
	if n := send(2, 3); n != 1 {
		t.Fatalf("%d of 6 taken a minute later, want 1", n)
	}
	clock.Add(10 * time.Minute)
	if n := send(3, 4); n != 5 {
		t.Fatalf("%d of 12 taken ten minutes later, want the burst of 5", n)
	}
	down.WaitFor(11, waitLong)
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 11 {
		t.Fatalf("%d delivered, want 11", n)
	}
	if v := scrape(t, g)[`mailgate_ratelimit_exceeded_total{rule="per-client"}`]; v != 38-11 {
		t.Errorf("exceeded_total of per-client %v, want %d", v, 38-11)
	}
}

// TestRateLimitDisconnect: a rule with action = "disconnect" answers 421
// 4.7.0 and closes the connection, at MAIL for a message limit and at
// RCPT for a recipient limit.
func TestRateLimitDisconnect(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startRateLimited(t, routeTo(down, "dest.test")+`
[[ratelimit]]
name = "messages"
key = "sender"
rate = 1
per = "1h"
burst = 1
action = "disconnect"

[[ratelimit]]
name = "recipients"
key = "sender_domain"
rate = 1
per = "1h"
burst = 2
count = "recipient"
action = "disconnect"
`, newTestClock())
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@one.test", []string{"b@dest.test"}, message("first@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("first message: %q", r)
	}
	c.Send("MAIL FROM:<a@one.test>\r\n")
	if out := c.Rest(); out != rateClosed+"\r\n" {
		t.Fatalf("second message from a@one.test: %q, want %q and the end", out, rateClosed)
	}

	c = dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@two.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("RCPT TO:<c@dest.test>", "250")
	c.Send("RCPT TO:<d@dest.test>\r\n")
	if out := c.Rest(); out != rateClosed+"\r\n" {
		t.Fatalf("third recipient from two.test: %q, want %q and the end", out, rateClosed)
	}
	if n := len(down.Messages()); n > 1 {
		t.Fatalf("%d delivered, want 1 at most", n)
	}
}

// TestRateLimitPerRecipient: counted per recipient, a limit refuses the
// recipients past the burst at RCPT, and the message goes to those taken;
// a limit by recipient counts each recipient address, whoever sends.
func TestRateLimitPerRecipient(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startRateLimited(t, routeTo(down, "dest.test")+`
[[ratelimit]]
name = "fanout"
key = "sender"
rate = 1
per = "1h"
burst = 3
count = "recipient"

[[ratelimit]]
name = "mailbox"
key = "recipient"
rate = 1
per = "1h"
burst = 2
`, newTestClock())
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	for i := range 5 {
		want := "250"
		if i >= 3 {
			want = rateDeferred
		}
		if r := c.Cmd(fmt.Sprintf("RCPT TO:<r%d@dest.test>", i), ""); !strings.HasPrefix(r, want) {
			t.Fatalf("recipient %d: %q, want %q", i, r, want)
		}
	}
	c.Cmd("DATA", "354")
	c.Send(message("fanout@test", "x\r\n") + ".\r\n")
	if r := c.Reply(); !strings.HasPrefix(r, "250") {
		t.Fatalf("data: %q", r)
	}
	msgs := down.WaitFor(1, waitLong)
	if got := strings.Join(msgs[0].Rcpts, " "); got != "r0@dest.test r1@dest.test r2@dest.test" {
		t.Fatalf("delivered to %s, want the 3 recipients taken", got)
	}

	// r0 has had one message; two senders more make three.
	for i, from := range []string{"x@one.test", "y@two.test"} {
		want := "250"
		if i == 1 {
			want = rateDeferred
		}
		if r := c.TrySend(from, []string{"R0@dest.test"}, message(fmt.Sprintf("mailbox-%d@test", i), "x\r\n")); !strings.HasPrefix(r, want) {
			t.Fatalf("message %d to r0: %q, want %q", i, r, want)
		}
	}
	if r := c.SendMail("y@two.test", []string{"other@dest.test"}, message("other@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("another recipient: %q", r)
	}
}

// TestRateLimitExemptions: a trusted client is not counted by a rule
// that exempts trusted clients (the default), and is by one with
// exempt_trusted = false, which leaves out only what its exempt list
// names.
func TestRateLimitExemptions(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startRateLimited(t, routeTo(down, "dest.test")+`
[server]
listen = ["127.0.0.1:0"]
trusted_networks = ["127.0.0.1"]

[[ratelimit]]
name = "inbound"
key = "client_ip"
rate = 1
per = "1h"
burst = 1

[[ratelimit]]
name = "outbound"
key = "sender"
rate = 1
per = "1h"
burst = 2
exempt_trusted = false
[ratelimit.exempt]
senders = ["vip@sender.test"]
`, newTestClock())
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	for i := range 3 {
		if r := c.TrySend("vip@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("vip-%d@test", i), "x\r\n")); !strings.HasPrefix(r, "250") {
			t.Fatalf("exempt message %d: %q", i, r)
		}
	}
	for i := range 3 {
		want := "250"
		if i == 2 {
			want = rateDeferred
		}
		if r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("a-%d@test", i), "x\r\n")); !strings.HasPrefix(r, want) {
			t.Fatalf("message %d of a@sender.test: %q, want %q", i, r, want)
		}
	}
}

// TestRateLimitStateSurvivesRestart: a spent burst is still spent after
// the gateway restarts on the same data_dir; `mailgate test` (DryRun)
// sees the saved state and writes nothing back; a state file that does
// not read back is rebuilt with an error line, and mail flows.
func TestRateLimitStateSurvivesRestart(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := t.TempDir()
	config := fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"\"\n", dir) +
		routeTo(down, "dest.test") + `
[[ratelimit]]
name = "per-sender"
key = "sender"
rate = 1
per = "1h"
burst = 2
`
	cfg, err := policy.Parse("test.toml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	clock := newTestClock()
	var log testkit.SyncBuffer
	start := func() *gateway.Gateway {
		t.Helper()
		g, err := gateway.New(context.Background(), cfg, gateway.Options{RateLimitNow: clock.Now,
			Logger: slog.New(slog.NewTextHandler(&log, nil))})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		return g
	}
	stop := func(g *gateway.Gateway) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	}
	try := func(g *gateway.Gateway, id string) string {
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n"))
		c.Cmd("QUIT", "221") // or the shutdown waits for the session
		return r
	}

	g := start()
	for i := range 2 {
		if r := try(g, fmt.Sprintf("before-%d@test", i)); !strings.HasPrefix(r, "250") {
			t.Fatalf("message %d: %q", i, r)
		}
	}
	stop(g)
	state := filepath.Join(dir, "ratelimit", "state")
	saved, err := os.ReadFile(state)
	if err != nil {
		t.Fatalf("no state saved at shutdown: %v", err)
	}

	// The dry run sees the spent burst, and leaves the file as it was.
	res, err := gateway.DryRun(context.Background(), cfg, gateway.Options{RateLimitNow: clock.Now}, gateway.DryRunInput{
		ClientIP: netip.MustParseAddr("192.0.2.1"), Helo: "client.test", From: "a@sender.test", To: []string{"b@dest.test"},
		Message: []byte(message("dry@test", "x\r\n")),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != rateDeferred || res.Phase != "mail" || !strings.Contains(res.Reason, "rate limit per-sender exceeded") {
		t.Errorf("dry run: %+v, want %q at mail", res, rateDeferred)
	}
	if now, _ := os.ReadFile(state); !bytes.Equal(now, saved) {
		t.Error("the dry run changed the saved state")
	}

	g = start()
	if r := try(g, "after@test"); r != rateDeferred {
		t.Fatalf("after the restart: %q, want %q", r, rateDeferred)
	}
	stop(g)

	if err := os.WriteFile(state, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	g = start()
	defer stop(g)
	if r := try(g, "rebuilt@test"); !strings.HasPrefix(r, "250") {
		t.Fatalf("with the state rebuilt: %q", r)
	}
	if !strings.Contains(log.String(), "level=ERROR msg=\"rate limits: saved state unreadable") {
		t.Errorf("no error line for the corrupt state:\n%s", log.String())
	}
}
