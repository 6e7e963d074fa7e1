package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// startGateway runs a gateway in-process on 127.0.0.1:0 with the given
// config (the listen address, data_dir and admin listener are filled in).
func startGateway(t *testing.T, config string) *gateway.Gateway {
	t.Helper()
	return startGatewayTB(t, config)
}

func startGatewayTB(t testing.TB, config string) *gateway.Gateway {
	t.Helper()
	return startGatewayOpts(t, config, gateway.Options{Logger: testLogger(t)})
}

// startGatewayOpts is startGateway with options; built-in stage kinds are
// served by the mailgate binary the tests built.
func startGatewayOpts(t testing.TB, config string, opts gateway.Options) *gateway.Gateway {
	t.Helper()
	return startGatewayIn(t, t.TempDir(), config, opts)
}

// startGatewayIn is startGatewayOpts on the data dir given, for a test
// that starts a gateway again on the same one.
func startGatewayIn(t testing.TB, dir, config string, opts gateway.Options) *gateway.Gateway {
	t.Helper()
	if opts.PluginCommand == nil {
		opts.PluginCommand = func(kind string) []string { return []string{mailgateBin, "plugin", kind} }
	}
	full := fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n", dir) + config
	if !strings.Contains(config, "[server]") {
		full += "\n[server]\nlisten = [\"127.0.0.1:0\"]\n"
	}
	if !strings.Contains(config, "[admin]") {
		// Not the default port: fuzz workers and other test binaries run
		// gateways at the same time.
		full += "\n[admin]\nlisten = \"127.0.0.1:0\"\n"
	}
	cfg, err := policy.Parse("test.toml", []byte(full))
	if err != nil {
		t.Fatalf("config: %v\n%s", err, full)
	}
	g, err := gateway.New(context.Background(), cfg, opts)
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
	return g
}

// waitLong bounds every wait for something the gateway does by itself
// (deliver, retry, restart a plugin): an upper bound for a loaded
// machine, never a measure.
const waitLong = 30 * time.Second

// waitQueueEmpty waits until the gateway's queue is empty: every message
// it acknowledged has reached its end (relayed, bounced, DSN queued and
// sent), so nothing more can reach a downstream server. Tests that count
// deliveries count after it; no sleep could prove that no second
// delivery comes.
func waitQueueEmpty(t *testing.T, g *gateway.Gateway) {
	t.Helper()
	c, err := admin.NewClient(g.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLong, "the queue to be empty", func() bool {
		left, err := c.Queue(context.Background())
		if err != nil {
			t.Fatalf("queue: %v", err)
		}
		return len(left) == 0
	})
}

// queue returns the gateway's queued messages.
func queue(t *testing.T, g *gateway.Gateway) []*spool.Envelope {
	t.Helper()
	c, err := admin.NewClient(g.AdminAddr().String())
	if err != nil {
		t.Fatal(err)
	}
	envs, err := c.Queue(context.Background())
	if err != nil {
		t.Fatalf("queue: %v", err)
	}
	return envs
}

func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("MAILGATE_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

func routeTo(srv *smtptest.Server, domains ...string) string {
	return fmt.Sprintf("\n[delivery]\nretry_min = \"50ms\"\nretry_max = \"200ms\"\n\n[[route]]\ndomains = [%s]\nservers = [%q]\n",
		quoteList(domains), srv.Addr())
}

func quoteList(list []string) string {
	var q []string
	for _, s := range list {
		q = append(q, fmt.Sprintf("%q", s))
	}
	return strings.Join(q, ", ")
}

// client is the raw SMTP client of the tests (testkit.SMTPClient).
type client = testkit.SMTPClient

// dial connects to a gateway's SMTP address and reads the greeting.
func dial(t *testing.T, addr net.Addr) *client { return testkit.DialSMTP(t, addr.String()) }

func message(id, body string) string {
	return "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: test\r\nMessage-ID: <" + id + ">\r\n\r\n" + body
}

func TestDeliversWithReceivedAndIdenticalBody(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.sender.test", "250")
	// On the wire the dot is doubled (RFC 5321 §4.5.2); the message has one.
	body := "line one\r\n.leading dot\r\n" + strings.Repeat("x", 990) + "\r\n"
	stuffed := strings.ReplaceAll(body, "\r\n.", "\r\n..")
	r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("m1@test", stuffed))
	if !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
		t.Fatalf("DATA reply %q", r)
	}
	id := strings.TrimPrefix(r, "250 2.0.0 Ok: queued as ")
	msgs := down.WaitFor(1, waitLong)
	m := msgs[0]
	if m.From != "a@sender.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "b@dest.test" {
		t.Fatalf("envelope %q -> %q", m.From, m.Rcpts)
	}
	data := string(m.Data)
	if !strings.HasPrefix(data, "Received: from client.sender.test ([127.0.0.1])\r\n\tby mx.gateway.test (mailgate) with ESMTP id "+id+"\r\n\tfor <b@dest.test>; ") {
		t.Fatalf("no Received field on top:\n%s", data)
	}
	want := message("m1@test", body)
	if !strings.HasSuffix(data, want) {
		t.Fatalf("relayed message differs:\n got %q\nwant suffix %q", data, want)
	}
}

func TestRelayDenied(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test", "*.sub.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	for _, rcpt := range []string{"x@elsewhere.test", "x@dest.test.evil.test", "x@sub.test", "x@[127.0.0.1]", "x@dest.test@evil.test"} {
		if r := c.Cmd("RCPT TO:<"+rcpt+">", "5"); !strings.HasPrefix(r, "554 5.7.1 ") && !strings.HasPrefix(r, "501 ") {
			t.Errorf("RCPT %s: %q, want 554 5.7.1 relay denied", rcpt, r)
		}
	}
	c.Cmd("RCPT TO:<x@DEST.TEST>", "250")
	c.Cmd("RCPT TO:<x@a.sub.test>", "250")
}

func TestTrustedNetworkMayRelay(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\ntrusted_networks = [\"127.0.0.0/8\"]\n"+routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@dest.test>", "250")
	c.Cmd("RCPT TO:<x@anywhere.test>", "250")
}

func TestSizeLimit(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = \"10KB\"\n"+routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	// Declared too big: refused at MAIL (RFC 1870).
	c.Cmd("MAIL FROM:<a@sender.test> SIZE=20000", "552 5.3.4")
	// Undeclared: refused while reading, after the client has sent it all.
	big := message("big@test", strings.Repeat(strings.Repeat("y", 70)+"\r\n", 300))
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, big); !strings.HasPrefix(r, "552 5.3.4") {
		t.Fatalf("oversize DATA: %q", r)
	}
	// The session goes on and a small message passes.
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("small@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("small message after oversize one: %q", r)
	}
	msgs := down.WaitFor(1, waitLong)
	if !bytes.Contains(msgs[0].Data, []byte("small@test")) {
		t.Fatalf("wrong message delivered")
	}
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
}

func TestDisconnectMidDataLeavesNothing(t *testing.T) {
	down := smtptest.NewServer(t)
	var log testkit.SyncBuffer
	g := startGatewayOpts(t, routeTo(down, "dest.test"), gateway.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("DATA", "354")
	c.Send(message("half@test", "half a message\r\n"))
	c.Conn.Close()
	// The gateway has decided on the half message once it logs the abort.
	waitUntil(t, waitLong, "the half message to be aborted", func() bool {
		return strings.Contains(log.String(), "msg=aborted")
	})
	// A second client proves the gateway is fine.
	c2 := dial(t, g.SMTPAddrs()[0])
	c2.Cmd("EHLO client.test", "250")
	if r := c2.SendMail("a@sender.test", []string{"b@dest.test"}, message("whole@test", "ok\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	down.WaitFor(1, waitLong)
	waitQueueEmpty(t, g)
	for _, m := range down.Messages() {
		if bytes.Contains(m.Data, []byte("half@test")) {
			t.Fatal("half message was delivered")
		}
	}
}

func TestLoopDetected(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_hops = 3\n"+routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	hops := strings.Repeat("Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n", 4)
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, hops+message("loop@test", "x\r\n")); !strings.HasPrefix(r, "554 5.4.6") {
		t.Fatalf("looping message: %q", r)
	}
}

func TestDownstreamDownThenBack(t *testing.T) {
	down := smtptest.NewServer(t)
	down.Stop()
	g := startGateway(t, routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	for i := range 3 {
		if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("q%d@test", i), "queued\r\n")); !strings.HasPrefix(r, "250") {
			t.Fatal(r)
		}
	}
	// Every message has met the server down before it comes back.
	waitUntil(t, waitLong, "a failed attempt of each message", func() bool {
		envs := queue(t, g)
		for _, env := range envs {
			if env.Attempts < 1 {
				return false
			}
		}
		return len(envs) == 3
	})
	down.Restart()
	down.WaitFor(3, waitLong)
	waitQueueEmpty(t, g)
	seen := map[string]int{}
	for _, m := range down.Messages() {
		seen[messageID(m.Data)]++
	}
	for i := range 3 {
		if n := seen[fmt.Sprintf("q%d@test", i)]; n != 1 {
			t.Errorf("q%d delivered %d times, want once", i, n)
		}
	}
}

func TestPermanentFailureBounces(t *testing.T) {
	down := smtptest.NewServer(t)
	down.SetRcptReply("nobody@dest.test", 550)
	g := startGateway(t, routeTo(down, "dest.test", "sender.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"nobody@dest.test", "b@dest.test"}, message("perm@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	// The good recipient gets it; the sender gets one DSN.
	msgs := down.WaitFor(2, waitLong)
	var dsn *smtptest.Message
	for i, m := range msgs {
		if m.From == "" {
			dsn = &msgs[i]
		}
	}
	if dsn == nil {
		t.Fatalf("no DSN among %d messages", len(msgs))
	}
	if len(dsn.Rcpts) != 1 || dsn.Rcpts[0] != "a@sender.test" {
		t.Fatalf("DSN went to %q", dsn.Rcpts)
	}
	for _, want := range []string{"multipart/report", "report-type=delivery-status", "Final-Recipient: rfc822; nobody@dest.test", "Action: failed", "Status: 5."} {
		if !bytes.Contains(dsn.Data, []byte(want)) {
			t.Errorf("DSN lacks %q:\n%s", want, dsn.Data)
		}
	}

	// From the null sender: no DSN, ever (RFC 5321 §4.5.5).
	if r := c.SendMail("", []string{"nobody@dest.test"}, message("perm2@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 2 {
		t.Fatalf("%d messages downstream, want 2 (no DSN for <>)", n)
	}
}

func messageID(data []byte) string {
	for _, line := range strings.Split(string(data), "\r\n") {
		if v, ok := strings.CutPrefix(line, "Message-ID: <"); ok {
			return strings.TrimSuffix(v, ">")
		}
		if line == "" {
			break
		}
	}
	return ""
}

// tempDir is a data dir that outlives a restarted gateway.
func tempDir(t *testing.T) string {
	return filepath.Join(t.TempDir(), "data")
}
