package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/testkit"
)

// routes routes the domains listed, as the gateway's route table does:
// without regard to case or a trailing dot.
type routes []string

// VerifyRcpt refuses the recipients whose local part is "unknown", and
// cannot verify those whose local part is "busy" (a 4xx) or "hung".
func (r routes) VerifyRcpt(_ context.Context, addr string) error {
	switch {
	case strings.HasPrefix(addr, "unknown@"):
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	case strings.HasPrefix(addr, "busy@"):
		return fmt.Errorf("not verified: %w", &smtp.SMTPError{Code: 450, EnhancedCode: smtp.EnhancedCode{4, 2, 1}, Message: "busy"})
	case strings.HasPrefix(addr, "hung@"):
		return fmt.Errorf("not verified: %w", context.DeadlineExceeded)
	}
	return nil
}

func (r routes) HasRoute(domain string) bool {
	d := strings.TrimSuffix(strings.ToLower(domain), ".")
	for _, x := range r {
		if x == d {
			return true
		}
	}
	return false
}

// queue records what was queued.
type queue struct {
	mu   sync.Mutex
	envs []*spool.Envelope
	err  error
}

func (q *queue) Err() error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.err
}

func (q *queue) Enqueue(env *spool.Envelope) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.envs = append(q.envs, env)
}

func (q *queue) queued() []*spool.Envelope {
	q.mu.Lock()
	defer q.mu.Unlock()
	return append([]*spool.Envelope(nil), q.envs...)
}

type noQuarantine struct{}

func (noQuarantine) Add(context.Context, *quarantine.Record, string) error { return nil }

type testServer struct {
	srv   *Server
	addr  net.Addr
	spool *spool.Spool
	queue *queue
}

// serve runs a Server on 127.0.0.1:0 with extra config lines, routing
// dest.test; it stops when the test ends.
func serve(t *testing.T, extra string) *testServer {
	t.Helper()
	return serveWith(t, extra, nil)
}

// serveWith is serve with a chain of stages.
func serveWith(t *testing.T, extra string, chain []pipeline.StageSpec) *testServer {
	t.Helper()
	return serveOpts(t, t.TempDir(), extra, chain, nil)
}

// serveOpts is serveWith on data directory dir, with set changing the
// options.
func serveOpts(t *testing.T, dir, extra string, chain []pipeline.StageSpec, set func(*Options)) *testServer {
	t.Helper()
	cfg := parseConfigIn(t, dir, extra)
	var p *pipeline.Pipeline
	if chain != nil {
		var err error
		if p, err = pipeline.New(chain, cfg.Policy, pipeline.Options{}); err != nil {
			t.Fatal(err)
		}
	}
	sp, err := spool.Open(t.TempDir() + "/queue") // its own: two servers may share dir
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{spool: sp, queue: &queue{}}
	opts := Options{Config: cfg, Spool: sp, Routes: routes{"dest.test"}, Queue: ts.queue, Quarantine: noQuarantine{}, Pipeline: p}
	if set != nil {
		set(&opts)
	}
	srv, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}
	ts.srv = srv
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ts.addr = l.Addr()
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(l)
	}()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
		sp.Close()
	})
	return ts
}

// parseConfig is the config of a test server with extra lines.
func parseConfig(t *testing.T, extra string) *policy.Config {
	t.Helper()
	return parseConfigIn(t, t.TempDir(), extra)
}

func parseConfigIn(t *testing.T, dir, extra string) *policy.Config {
	t.Helper()
	cfg, err := policy.Parse("test.toml", []byte(fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n", dir)+extra))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// client is a raw SMTP client: it sends exactly the bytes it is given.
// client is the raw SMTP client of the tests (testkit.SMTPClient).
type client = testkit.SMTPClient

// dial connects, reads the greeting and says EHLO.
func dial(t *testing.T, ts *testServer) *client {
	t.Helper()
	c := testkit.DialSMTP(t, ts.addr.String())
	c.Cmd("EHLO client.test", "250")
	return c
}

const msg = "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: test\r\n\r\nhello\r\n"

// Addresses that go-smtp lets through but that must not reach the spool:
// they would be read differently downstream (percent hack, source routes,
// "@" in a local part) or break the Received field written for them.
func TestAddressSyntax(t *testing.T) {
	ts := serve(t, "")
	c := dial(t, ts)
	for _, from := range []string{
		`"a b"@sender.test`,
		"a%b@sender.test",
		`"x@y"@sender.test`,
		"a@sender_test",
		"a@sender.test\"",
		"a@-sender.test",
		"a@[300.1.1.1]",
		"\"\r\"@sender.test",
	} {
		if r := c.Cmd("MAIL FROM:<"+from+">", "5"); !strings.HasPrefix(r, "501 5.1.7 ") {
			t.Errorf("MAIL FROM:<%q>: %q, want 501 5.1.7", from, r)
		}
	}
	c.Cmd("MAIL FROM:<a@[192.0.2.1]>", "250")
	c.Cmd("RSET", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	for _, rcpt := range []string{
		`"x@evil.test"@dest.test`,
		"y@evil.test@dest.test",
		"z%evil.test@dest.test",
		"evil.test!z@dest.test",
		"\"\r.\rX-Evil: 1\"@dest.test",
		"\"a\x00b\"@dest.test",
		`"a b"@dest.test`,
		"a@dest.test\rX-Evil:1",
		"a@dest.test\"",
		"a@dest..test",
		"a@[IPv6:1.2.3.4]",
	} {
		if r := c.Cmd("RCPT TO:<"+rcpt+">", "5"); !strings.HasPrefix(r, "501 5.1.3 ") {
			t.Errorf("RCPT TO:<%q>: %q, want 501 5.1.3", rcpt, r)
		}
	}
	c.Cmd("RCPT TO:<b@Dest.Test.>", "250")
	c.Cmd("DATA", "354")
	c.Send(msg + ".\r\n")
	c.Expect("250 ")
	envs := ts.queue.queued()
	// Queued in canonical form: the domain lower-cased, without its root
	// dot, the local part as written.
	if len(envs) != 1 || len(envs[0].Rcpts) != 1 || envs[0].Rcpts[0].Addr != "b@dest.test" {
		t.Fatalf("queued %+v, want one message to b@dest.test", envs)
	}
}

// A trusted client may use a quoted local part with an "@" in it (the
// router quotes it again); bytes that break a header line it may not.
func TestAddressSyntaxTrusted(t *testing.T) {
	ts := serve(t, "[server]\ntrusted_networks = [\"127.0.0.0/8\"]\n")
	c := dial(t, ts)
	c.Cmd("MAIL FROM:<a@dest.test>", "250")
	c.Cmd("RCPT TO:<\"\r.\rX-Evil: 1\"@dest.test>", "501 5.1.3 ")
	c.Cmd("RCPT TO:<a@bad_domain.test>", "501 5.1.3 ")
	c.Cmd(`RCPT TO:<"x@evil.test"@dest.test>`, "250")
	c.Cmd("DATA", "354")
	c.Send(msg + ".\r\n")
	c.Expect("250 ")
	envs := ts.queue.queued()
	if len(envs) != 1 || envs[0].Rcpts[0].Addr != "x@evil.test@dest.test" {
		t.Fatalf("queued %+v", envs)
	}
}

// RFC 6531: with SMTPUTF8 a domain may be in UTF-8 if it is a valid IDN.
func TestAddressSyntaxUTF8(t *testing.T) {
	ts := serve(t, "[server]\ntrusted_networks = [\"127.0.0.0/8\"]\n")
	c := dial(t, ts)
	c.Cmd("MAIL FROM:<ö@bücher.test> SMTPUTF8", "250")
	c.Cmd("RCPT TO:<ü@bücher.test>", "250")
	c.Cmd("RCPT TO:<ü@bü_cher.test>", "501 5.1.3 ")
	c.Cmd("RCPT TO:<ü@a\u2488.test>", "501 5.1.3 ")
	c.Cmd("DATA", "354")
	c.Send(msg + ".\r\n")
	c.Expect("250 ")
	// The domains are queued in A-labels, the one form lists, routes and
	// DNS compare; the local parts as written.
	envs := ts.queue.queued()
	if len(envs) != 1 || envs[0].From != "ö@xn--bcher-kva.test" || len(envs[0].Rcpts) != 1 || envs[0].Rcpts[0].Addr != "ü@xn--bcher-kva.test" {
		t.Fatalf("queued %+v, want ö@xn--bcher-kva.test to ü@xn--bcher-kva.test", envs)
	}
}

// go-smtp runs Data in a goroutine of its own for BDAT, and a RSET, an
// oversize chunk or a disconnect between chunks ends the transaction
// while that Data still runs. The next transaction must not be touched by
// it: no race, every reply right, every message queued whole.
func TestBDATInterruptedThenNewTransaction(t *testing.T) {
	ts := serve(t, "[server]\nmax_message_size = \"1KB\"\n")
	const rounds = 20
	interrupt := map[string]func(c *client){
		"rset": func(c *client) { c.Cmd("RSET", "250") },
		"oversize": func(c *client) {
			c.Send("BDAT 2000\r\n" + strings.Repeat("x", 2000))
			c.Expect("552 5.3.4 ")
		},
		"disconnect": func(c *client) { c.Conn.Close() },
	}
	n := 0
	for _, name := range []string{"rset", "oversize", "disconnect"} {
		c := dial(t, ts)
		for i := range rounds {
			c.Cmd("MAIL FROM:<a@sender.test>", "250")
			c.Cmd("RCPT TO:<b@dest.test>", "250")
			c.Send("BDAT 12\r\nSubject: x\r\n")
			c.Expect("250 ")
			interrupt[name](c)
			if name == "disconnect" {
				c = dial(t, ts)
			}
			c.Cmd("MAIL FROM:<a@sender.test>", "250")
			c.Cmd("RCPT TO:<b@dest.test>", "250")
			body := fmt.Sprintf("Subject: %s %d\r\n\r\nbody\r\n", name, i)
			if i%2 == 0 {
				c.Cmd("DATA", "354")
				c.Send(body + ".\r\n")
			} else {
				c.Send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
			}
			c.Expect("250 2.0.0 Ok: queued as ")
			n++
			envs := ts.queue.queued()
			if len(envs) != n {
				t.Fatalf("%s round %d: %d messages queued, want %d", name, i, len(envs), n)
			}
			data, err := os.ReadFile(ts.spool.MessagePath(envs[n-1].ID))
			if err != nil {
				t.Fatalf("%s round %d: %v", name, i, err)
			}
			if !strings.HasSuffix(string(data), body) {
				t.Errorf("%s round %d: queued %q, want suffix %q", name, i, data, body)
			}
		}
	}
	// The interrupted messages leave no file behind.
	msgDir := filepath.Dir(ts.spool.MessagePath(ts.queue.queued()[0].ID))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		files, err := os.ReadDir(msgDir)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d message files in the spool, want %d", len(files), n)
		}
	}
}

// When delivery has stopped for good, DATA is answered 451 rather than
// 250 for mail nobody would deliver.
func TestDataRefusedWhenDeliveryStopped(t *testing.T) {
	ts := serve(t, "")
	c := dial(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("DATA", "354")
	ts.queue.mu.Lock()
	ts.queue.err = errors.New("router: load queue: broken")
	ts.queue.mu.Unlock()
	c.Send(msg + ".\r\n")
	c.Expect("451 4.3.0 ")
	if n := len(ts.queue.queued()); n != 0 {
		t.Fatalf("%d messages queued", n)
	}
}

// A recipient the next hop refuses is refused at RCPT, so that no bounce
// goes to a sender that may be forged; one it could not verify is to be
// tried again later, not taken to bounce later.
func TestRcptVerified(t *testing.T) {
	ts := serve(t, "")
	c := dial(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<unknown@dest.test>", "550 5.1.1 ")
	c.Cmd("RCPT TO:<busy@dest.test>", "450 4.1.1 ")
	c.Cmd("RCPT TO:<hung@dest.test>", "450 4.1.1 ")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("DATA", "354")
	c.Send(msg + ".\r\n")
	c.Expect("250 ")
	envs := ts.queue.queued()
	if len(envs) != 1 || len(envs[0].Rcpts) != 1 || envs[0].Rcpts[0].Addr != "b@dest.test" {
		t.Fatalf("queued %+v", envs)
	}
}

// The header is parsed into memory for the stages: a message that is all
// header (no blank line) is refused above 1 MiB, whatever its size limit.
func TestHeaderTooLarge(t *testing.T) {
	ts := serve(t, "")
	c := dial(t, ts)
	line := "X-Pad: " + strings.Repeat("p", 990) + "\r\n"
	big := strings.Repeat(line, 1200) // 1.2 MB
	for _, tc := range []struct {
		data, want string
	}{
		{big, "552 5.3.4 Message header too large"},
		{"Subject: x\r\n\r\n" + big, "250 "},
		{"Subject: x\r\n\r\n" + "body\r\n", "250 "},
	} {
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		c.Cmd("DATA", "354")
		c.Send(tc.data + ".\r\n")
		c.Expect(tc.want)
	}
	if n := len(ts.queue.queued()); n != 2 {
		t.Fatalf("%d messages queued, want 2", n)
	}
}

func TestHeaderReader(t *testing.T) {
	long := strings.Repeat("a", 100) + "\r\n"
	h := &headerReader{br: bufio.NewReaderSize(strings.NewReader(long+long), 16), left: 150}
	if got, err := h.ReadString('\n'); got != long || err != nil {
		t.Fatalf("first line: %q, %v", got, err)
	}
	if _, err := h.ReadString('\n'); !errors.Is(err, errHeaderTooLarge) {
		t.Fatalf("second line over the limit: %v", err)
	}
}
