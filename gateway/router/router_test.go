package router

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// waitLong bounds every wait for something the router does by itself: an
// upper bound for a loaded machine, never a measure.
const waitLong = 30 * time.Second

// testConfig is a config with short retries; DNS points at a closed port
// so that a test that reaches MX delivery by mistake fails.
func testConfig(routes ...policy.Route) *policy.Config {
	ms := func(n int) stages.Duration { return stages.Duration(time.Duration(n) * time.Millisecond) }
	return &policy.Config{
		Hostname: "gw.test",
		DNS:      policy.DNS{Servers: []string{"127.0.0.1:1"}, Timeout: ms(500)},
		Delivery: policy.Delivery{
			MaxAge:          ms(60_000),
			RetryMin:        ms(50),
			RetryMax:        ms(200),
			ConnectTimeout:  ms(2000),
			CommandTimeout:  ms(5000),
			MaxConnections:  4,
			BounceFrom:      "MAILER-DAEMON@gw.test",
			HeloName:        "gw.test",
			IdleConnTimeout: ms(30_000),
		},
		Routes: routes,
	}
}

func serverRoute(domain string, srvs ...*smtptest.Server) policy.Route {
	r := policy.Route{Domains: []string{domain}, TLS: "opportunistic"}
	for _, s := range srvs {
		r.Servers = append(r.Servers, s.Addr())
	}
	return r
}

func openSpool(t *testing.T) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

// logBuffer collects log output a test reads while it is written.
type logBuffer = testkit.SyncBuffer

type harness struct {
	t    *testing.T
	cfg  *policy.Config
	sp   *spool.Spool
	r    *Router
	logs *logBuffer
	stop func()
}

// start runs a Router over sp until the test ends or h.stop is called.
func start(t *testing.T, cfg *policy.Config, sp *spool.Spool, opts ...Option) *harness {
	t.Helper()
	logs := &logBuffer{}
	r, err := New(cfg, sp, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})), opts...)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Run(ctx) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Run: %v", err)
			}
		})
	}
	t.Cleanup(func() {
		stop()
		if t.Failed() {
			t.Logf("router log:\n%s", logs)
		}
	})
	return &harness{t: t, cfg: cfg, sp: sp, r: r, logs: logs, stop: stop}
}

// commit puts a message into the spool as smtpd does.
func commit(t *testing.T, sp *spool.Spool, from string, rcpts []string, data string) *spool.Envelope {
	t.Helper()
	w, err := sp.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(data)); err != nil {
		t.Fatal(err)
	}
	env := &spool.Envelope{From: from}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, spool.Recipient{Addr: r, Status: spool.Pending})
	}
	if err := w.Commit(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return env
}

func (h *harness) send(from string, rcpts []string, data string) *spool.Envelope {
	env := commit(h.t, h.sp, from, rcpts, data)
	h.r.Enqueue(env)
	return env
}

// waitUntil polls cond until it holds; bounded by waitLong.
func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func (h *harness) waitGone(id string) {
	h.t.Helper()
	waitUntil(h.t, id+" is removed from the spool", func() bool {
		_, err := h.sp.Load(id)
		return errors.Is(err, fs.ErrNotExist)
	})
}

// waitQueue waits until cond holds of the router's queue state, read by
// the Run goroutine between its steps.
func (h *harness) waitQueue(what string, cond func(s *scheduler) bool) {
	h.t.Helper()
	waitUntil(h.t, what, func() bool {
		ok := false
		if err := h.r.do(context.Background(), func(s *scheduler) error {
			ok = cond(s)
			return nil
		}); err != nil {
			h.t.Fatalf("router: %v", err)
		}
		return ok
	})
}

// waitIdle waits until the router holds nothing it could still deliver:
// nothing incoming, nothing queued, no job running. Counting deliveries
// after it counts them all, where a sleep would only make a second
// attempt unlikely.
func (h *harness) waitIdle() {
	h.t.Helper()
	h.waitQueue("the router's queue is empty and idle", func(s *scheduler) bool {
		s.r.mu.Lock()
		defer s.r.mu.Unlock()
		return len(s.r.incoming) == 0 && len(s.items) == 0 && s.busy == 0
	})
}

// waitAttempts waits until the router has tried env n times.
func (h *harness) waitAttempts(id string, n int) *spool.Envelope {
	h.t.Helper()
	var env *spool.Envelope
	waitUntil(h.t, id+" was attempted", func() bool {
		var err error
		env, err = h.sp.Load(id)
		return err == nil && env.Attempts >= n
	})
	return env
}

const sample = "From: alice@sender.test\r\n" +
	"To: bob@ex.test\r\n" +
	"Subject: test\r\n" +
	"Message-ID: <1@sender.test>\r\n" +
	"\r\n" +
	"Hello.\r\n" +
	".leading dot must survive dot-stuffing\r\n" +
	"..two dots\r\n" +
	".\r\n" +
	"8bit: caf\xc3\xa9\r\n" +
	"trailing spaces   \r\n" +
	"\r\n"

func TestDeliverByteIdentical(t *testing.T) {
	srv := smtptest.NewServer(t)
	h := start(t, testConfig(serverRoute("ex.test", srv)), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test", "carol@ex.test"}, sample)

	msgs := srv.WaitFor(1, waitLong)
	m := msgs[0]
	if string(m.Data) != sample {
		t.Errorf("downstream got\n%q\nwant\n%q", m.Data, sample)
	}
	if m.From != "alice@sender.test" || strings.Join(m.Rcpts, ",") != "bob@ex.test,carol@ex.test" {
		t.Errorf("envelope %q -> %q", m.From, m.Rcpts)
	}
	if m.Helo != "gw.test" {
		t.Errorf("EHLO %q, want helo_name gw.test", m.Helo)
	}
	h.waitGone(env.ID)
	logs := h.logs.String()
	for _, rcpt := range []string{"bob@ex.test", "carol@ex.test"} {
		if !strings.Contains(logs, "msg=relayed queue_id="+env.ID+" rcpt="+rcpt+" host="+srv.Addr()) {
			t.Errorf("no relayed line for %s in log:\n%s", rcpt, logs)
		}
	}
}

func TestConnectionReuse(t *testing.T) {
	srv := smtptest.NewServer(t)
	cfg := testConfig(serverRoute("ex.test", srv))
	cfg.Delivery.MaxConnections = 1 // every message must wait for the one connection
	h := start(t, cfg, openSpool(t))
	var ids []string
	for i := range 5 {
		env := h.send("alice@sender.test", []string{"bob@ex.test"}, strings.Replace(sample, "Hello.", "Hello "+string(rune('A'+i)), 1))
		ids = append(ids, env.ID)
	}
	srv.WaitFor(5, waitLong)
	for _, id := range ids {
		h.waitGone(id)
	}
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections for 5 messages, want 1", n)
	}
	if n := len(srv.Messages()); n != 5 {
		t.Errorf("%d messages delivered, want 5", n)
	}
}

func TestIdleConnectionDropped(t *testing.T) {
	srv := smtptest.NewServer(t)
	cfg := testConfig(serverRoute("ex.test", srv))
	cfg.Delivery.IdleConnTimeout = stages.Duration(100 * time.Millisecond)
	h := start(t, cfg, openSpool(t))
	h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	srv.WaitFor(1, waitLong)
	// The sweeper ends the idle connection with QUIT: the server sees it.
	waitUntil(t, "the idle connection to be closed with QUIT", func() bool {
		w := srv.Transcripts()
		return len(w) == 1 && strings.HasSuffix(w[0], "QUIT\r\n")
	})
	h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	srv.WaitFor(2, waitLong)
	if n := srv.Connections(); n != 2 {
		t.Errorf("%d connections, want 2: the first one idled out", n)
	}
}

func TestDownstreamDownThenBack(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.Stop()
	h := start(t, testConfig(serverRoute("ex.test", srv)), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)

	got := h.waitAttempts(env.ID, 2)
	rc := got.Rcpts[0]
	if rc.Status != spool.Pending || !strings.HasPrefix(rc.LastReply, "451 4.4.1 ") || !strings.Contains(rc.LastReply, "refused") {
		t.Errorf("after a refused connection: %+v", rc)
	}
	if !strings.Contains(h.logs.String(), "msg=deferred queue_id="+env.ID) {
		t.Errorf("no deferred line in log:\n%s", h.logs)
	}
	srv.Restart()
	srv.WaitFor(1, waitLong)
	h.waitGone(env.ID)
	h.waitIdle()
	if n := len(srv.Messages()); n != 1 {
		t.Errorf("delivered %d times, want once", n)
	}
}

func TestFailover(t *testing.T) {
	down := smtptest.NewServer(t)
	down.Stop()
	up := smtptest.NewServer(t)
	h := start(t, testConfig(serverRoute("ex.test", down, up)), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	up.WaitFor(1, waitLong)
	h.waitGone(env.ID)
	if !strings.Contains(h.logs.String(), "host="+up.Addr()) {
		t.Errorf("relayed line does not name %s:\n%s", up.Addr(), h.logs)
	}
}

func TestPerRecipientResults(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.SetRcptReply("bad@ex.test", 550)
	srv.SetRcptReply("later@ex.test", 451)
	cfg := testConfig(serverRoute("ex.test", srv), serverRoute("sender.test", srv))
	h := start(t, cfg, openSpool(t))
	env := h.send("alice@sender.test", []string{"good1@ex.test", "bad@ex.test", "later@ex.test", "good2@ex.test"}, sample)

	// The good recipients and the DSN for the bad one.
	msgs := srv.WaitFor(2, waitLong)
	if got := strings.Join(msgs[0].Rcpts, ","); got != "good1@ex.test,good2@ex.test" || string(msgs[0].Data) != sample {
		t.Errorf("first delivery to %s", got)
	}
	dsnMsg := msgs[1]
	if dsnMsg.From != "" || strings.Join(dsnMsg.Rcpts, ",") != "alice@sender.test" {
		t.Fatalf("second message %q -> %q, want the DSN from <> to alice", dsnMsg.From, dsnMsg.Rcpts)
	}
	parts := smtptest.ParseDSN(t, dsnMsg.Data)
	if !strings.Contains(parts.Status, "Final-Recipient: rfc822; bad@ex.test\r\nAction: failed\r\nStatus: 5.1.1\r\n") ||
		!strings.Contains(parts.Status, "Diagnostic-Code: smtp; 550 5.1.1 no such user here") {
		t.Errorf("delivery-status part:\n%s", parts.Status)
	}
	for _, other := range []string{"good1", "good2", "later"} {
		if strings.Contains(parts.Status, other) {
			t.Errorf("DSN reports %s:\n%s", other, parts.Status)
		}
	}
	if !strings.Contains(parts.Headers, "Message-ID: <1@sender.test>") {
		t.Errorf("DSN lacks the original header:\n%s", parts.Headers)
	}

	// The deferred one is retried alone.
	e := h.waitAttempts(env.ID, 2)
	if !e.DSNSent || e.Rcpts[1].Status != spool.Failed || e.Rcpts[2].Status != spool.Pending || e.Rcpts[2].Attempts < 2 ||
		e.Rcpts[0].Attempts != 1 || e.Rcpts[3].Attempts != 1 {
		t.Errorf("envelope after retries: %+v", e)
	}
	srv.SetRcptReply("later@ex.test", 0)
	msgs = srv.WaitFor(3, waitLong)
	if got := strings.Join(msgs[2].Rcpts, ","); got != "later@ex.test" {
		t.Errorf("retry went to %s, want later@ex.test only", got)
	}
	h.waitGone(env.ID)
	h.waitIdle()
	if n := len(srv.Messages()); n != 3 {
		t.Errorf("%d messages downstream, want 3 (good ones, DSN, later)", n)
	}
	if !strings.Contains(h.logs.String(), "msg=bounced queue_id="+env.ID+" rcpt=bad@ex.test") {
		t.Errorf("no bounced line:\n%s", h.logs)
	}
}

func TestNoDSNToNullSenderOrForDSN(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.SetRcptReply("bad@ex.test", 550)
	h := start(t, testConfig(serverRoute("ex.test", srv), serverRoute("sender.test", srv)), openSpool(t))

	nullSender := h.send("", []string{"bad@ex.test"}, sample)
	w, err := h.sp.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte(sample))
	isDSN := &spool.Envelope{From: "alice@sender.test", DSN: true, Rcpts: []spool.Recipient{{Addr: "bad@ex.test", Status: spool.Pending}}}
	if err := w.Commit(context.Background(), isDSN); err != nil {
		t.Fatal(err)
	}
	h.r.Enqueue(isDSN)

	h.waitGone(nullSender.ID)
	h.waitGone(isDSN.ID)
	h.waitIdle()
	if msgs := srv.Messages(); len(msgs) != 0 {
		t.Errorf("downstream got %d messages, want none: %+v", len(msgs), msgs[0].Rcpts)
	}
	if strings.Contains(h.logs.String(), "dsn queued") {
		t.Errorf("a DSN was queued:\n%s", h.logs)
	}
}

func TestExpiry(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.SetRcptReply("slow@ex.test", 451)
	cfg := testConfig(serverRoute("ex.test", srv), serverRoute("sender.test", srv))
	cfg.Delivery.MaxAge = stages.Duration(400 * time.Millisecond)
	h := start(t, cfg, openSpool(t))
	env := h.send("alice@sender.test", []string{"slow@ex.test"}, sample)

	msgs := srv.WaitFor(1, waitLong)
	if msgs[0].From != "" || msgs[0].Rcpts[0] != "alice@sender.test" {
		t.Fatalf("got %q -> %q, want the DSN", msgs[0].From, msgs[0].Rcpts)
	}
	parts := smtptest.ParseDSN(t, msgs[0].Data)
	if !strings.Contains(parts.Status, "Final-Recipient: rfc822; slow@ex.test\r\nAction: failed\r\nStatus: 5.4.7\r\n") ||
		!strings.Contains(parts.Status, "Diagnostic-Code: smtp; 451 4.0.0 test reply") {
		t.Errorf("delivery-status part:\n%s", parts.Status)
	}
	if !strings.Contains(parts.Human, "delivery time expired") {
		t.Errorf("human part:\n%s", parts.Human)
	}
	h.waitGone(env.ID)
	if !strings.Contains(h.logs.String(), "msg=expired queue_id="+env.ID+" rcpt=slow@ex.test") {
		t.Errorf("no expired line:\n%s", h.logs)
	}
	if el := time.Since(env.Received); el < 400*time.Millisecond {
		t.Errorf("expired after %v, before max_age", el)
	}
}

// startDNS serves zone (RR strings) on 127.0.0.1 over UDP. Names it does
// not know get NXDOMAIN.
func startDNS(t *testing.T, zone ...string) string {
	t.Helper()
	var rrs []dns.RR
	for _, z := range zone {
		rr, err := dns.NewRR(z)
		if err != nil {
			t.Fatal(err)
		}
		rrs = append(rrs, rr)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, req *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(req)
		q := req.Question[0]
		known := false
		for _, rr := range rrs {
			if strings.EqualFold(rr.Header().Name, q.Name) {
				known = true
				if rr.Header().Rrtype == q.Qtype {
					m.Answer = append(m.Answer, rr)
				}
			}
		}
		if !known {
			m.Rcode = dns.RcodeNameError
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	srv.NotifyStartedFunc = func() { close(started) }
	go srv.ActivateAndServe()
	<-started
	t.Cleanup(func() { srv.Shutdown() })
	return pc.LocalAddr().String()
}

func TestMXDelivery(t *testing.T) {
	srv := smtptest.NewServer(t)
	dnsAddr := startDNS(t,
		"mx.test. 60 IN MX 20 backup.mx.test.",
		"mx.test. 60 IN MX 10 mail.mx.test.",
		"mail.mx.test. 60 IN A 127.0.0.1",
		"backup.mx.test. 60 IN A 127.0.0.2",
		"implicit.test. 60 IN A 127.0.0.1",
		"null.test. 60 IN MX 0 .",
	)
	cfg := testConfig(
		policy.Route{Domains: []string{"mx.test"}, MX: true},
		serverRoute("sender.test", srv),
	)
	cfg.DNS.Servers = []string{dnsAddr}
	h := start(t, cfg, openSpool(t), MXPort(srv.Port()))

	// A route with mx = true, and MX delivery without a route (as for
	// trusted relaying) to a domain with only an A record.
	routed := h.send("alice@sender.test", []string{"bob@mx.test"}, sample)
	unrouted := h.send("", []string{"carol@implicit.test"}, sample)
	msgs := srv.WaitFor(2, waitLong)
	got := map[string]bool{}
	for _, m := range msgs {
		got[strings.Join(m.Rcpts, ",")] = true
	}
	if !got["bob@mx.test"] || !got["carol@implicit.test"] {
		t.Errorf("delivered to %v", got)
	}
	h.waitGone(routed.ID)
	h.waitGone(unrouted.ID)
	if !strings.Contains(h.logs.String(), "rcpt=bob@mx.test host=mail.mx.test:"+srv.Port()) {
		t.Errorf("bob@mx.test not relayed via mail.mx.test:\n%s", h.logs)
	}
	if strings.Contains(h.logs.String(), "backup.mx.test") {
		t.Errorf("the backup MX was tried before the preferred one:\n%s", h.logs)
	}

	// A domain that does not exist fails at once.
	nx := h.send("", []string{"eve@nowhere.test"}, sample)
	h.waitGone(nx.ID)
	if !strings.Contains(h.logs.String(), `msg=bounced queue_id=`+nx.ID+` rcpt=eve@nowhere.test host="" reply="550 5.1.2 recipient domain nowhere.test not found"`) {
		t.Errorf("no bounce for a domain without DNS:\n%s", h.logs)
	}

	// Null MX (RFC 7505) fails at once, with a DSN.
	null := h.send("alice@sender.test", []string{"dave@null.test"}, sample)
	msgs = srv.WaitFor(3, waitLong)
	parts := smtptest.ParseDSN(t, msgs[2].Data)
	if !strings.Contains(parts.Status, "Final-Recipient: rfc822; dave@null.test\r\nAction: failed\r\nStatus: 5.1.10\r\n") {
		t.Errorf("null MX DSN:\n%s", parts.Status)
	}
	h.waitGone(null.ID)
}

func TestRestartPicksUpQueue(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.Stop()
	cfg := testConfig(serverRoute("ex.test", srv))
	sp := openSpool(t)
	h1 := start(t, cfg, sp)
	deferred := h1.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	h1.waitAttempts(deferred.ID, 1)
	h1.stop()
	// Committed while no router runs, never enqueued.
	idle := commit(t, sp, "alice@sender.test", []string{"carol@ex.test"}, sample)

	srv.Restart()
	h2 := start(t, cfg, sp)
	msgs := srv.WaitFor(2, waitLong)
	h2.waitGone(deferred.ID)
	h2.waitGone(idle.ID)
	h2.waitIdle()
	if n := len(srv.Messages()); n != 2 {
		t.Errorf("%d deliveries, want 2: %v %v", n, msgs[0].Rcpts, msgs[1].Rcpts)
	}
}

func TestShutdownAbandonsSafely(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.SetDataReply(451)
	cfg := testConfig(serverRoute("ex.test", srv))
	sp := openSpool(t)
	h := start(t, cfg, sp)
	env := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	h.waitAttempts(env.ID, 1)
	h.stop()
	if err := h.r.QueueOp(context.Background(), "retry", env.ID); !errors.Is(err, ErrStopped) {
		t.Errorf("Retry after Run returned: %v, want ErrStopped", err)
	}
	got, err := sp.Load(env.ID)
	if err != nil || got.Rcpts[0].Status != spool.Pending {
		t.Fatalf("after shutdown: %+v, %v; want the recipient pending", got, err)
	}
}

func TestOperatorCalls(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.Stop()
	cfg := testConfig(serverRoute("ex.test", srv))
	cfg.Delivery.RetryMin = stages.Duration(time.Hour) // only Retry and Release bring an attempt
	cfg.Delivery.RetryMax = stages.Duration(time.Hour)
	h := start(t, cfg, openSpool(t))
	ctx := context.Background()

	held := h.send("alice@sender.test", []string{"held@ex.test"}, sample)
	deleted := h.send("alice@sender.test", []string{"deleted@ex.test"}, sample)
	retried := h.send("alice@sender.test", []string{"retried@ex.test"}, sample)
	for _, id := range []string{held.ID, deleted.ID, retried.ID} {
		h.waitAttempts(id, 1)
	}
	if err := h.r.QueueOp(ctx, "hold", held.ID); err != nil {
		t.Fatal(err)
	}
	if e, _ := h.sp.Load(held.ID); !e.Held {
		t.Error("Hold did not reach the spool")
	}
	if err := h.r.QueueOp(ctx, "delete", deleted.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := h.sp.Load(deleted.ID); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("deleted message still in the spool: %v", err)
	}
	if err := h.r.QueueOp(ctx, "delete", deleted.ID); !errors.Is(err, spool.ErrNotFound) {
		t.Errorf("second Delete: %v, want ErrNotFound", err)
	}
	if err := h.r.QueueOp(ctx, "retry", held.ID); err == nil {
		t.Error("Retry of a held message succeeded")
	}

	srv.Restart()
	if err := h.r.QueueOp(ctx, "retry", retried.ID); err != nil {
		t.Fatal(err)
	}
	msgs := srv.WaitFor(1, waitLong)
	h.waitGone(retried.ID)
	if msgs[0].Rcpts[0] != "retried@ex.test" {
		t.Errorf("delivered %v, want retried@ex.test", msgs[0].Rcpts)
	}
	// Only the held message is left, not due, and no job runs: nothing
	// can reach the server before Release.
	h.waitQueue("only the held message to be left, idle", func(s *scheduler) bool {
		it := s.items[held.ID]
		return len(s.items) == 1 && it != nil && it.index < 0 && !it.busy && s.busy == 0
	})
	if n := len(srv.Messages()); n != 1 {
		t.Fatalf("%d deliveries while one message is held", n)
	}
	if err := h.r.QueueOp(ctx, "release", held.ID); err != nil {
		t.Fatal(err)
	}
	msgs = srv.WaitFor(2, waitLong)
	if msgs[1].Rcpts[0] != "held@ex.test" {
		t.Errorf("delivered %v, want held@ex.test", msgs[1].Rcpts)
	}
	h.waitGone(held.ID)
}

func TestMaildirDelivery(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "Maildir")
	h := start(t, testConfig(policy.Route{Domains: []string{"*"}, Maildir: dir}), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test", "carol@other.test"}, sample)
	h.waitGone(env.ID)
	files, err := os.ReadDir(filepath.Join(dir, "new"))
	if err != nil || len(files) != 1 {
		t.Fatalf("new/ holds %v (%v), want one message", files, err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "new", files[0].Name()))
	if err != nil {
		t.Fatal(err)
	}
	if want := "Return-Path: <alice@sender.test>\r\n" + sample; string(got) != want {
		t.Errorf("maildir file:\n%q\nwant\n%q", got, want)
	}
	if tmp, _ := os.ReadDir(filepath.Join(dir, "tmp")); len(tmp) != 0 {
		t.Errorf("tmp/ not empty: %v", tmp)
	}
}

func TestTLS(t *testing.T) {
	withTLS := smtptest.NewServer(t, smtptest.WithTLS())
	plain := smtptest.NewServer(t)
	opp := serverRoute("opp.test", withTLS)
	req := serverRoute("req.test", withTLS)
	req.TLS, req.TLSSkipVerify = "required", true
	reqPlain := serverRoute("reqplain.test", plain)
	reqPlain.TLS = "required"
	none := serverRoute("none.test", withTLS)
	none.TLS = "none"
	h := start(t, testConfig(opp, req, reqPlain, none), openSpool(t))

	h.send("a@sender.test", []string{"x@opp.test"}, sample)
	h.send("a@sender.test", []string{"x@req.test"}, sample)
	h.send("a@sender.test", []string{"x@none.test"}, sample)
	failing := h.send("a@sender.test", []string{"x@reqplain.test"}, sample)
	msgs := withTLS.WaitFor(3, waitLong)
	for _, m := range msgs {
		wantTLS := m.Rcpts[0] != "x@none.test"
		if m.TLS != wantTLS || m.Helo != "gw.test" || string(m.Data) != sample {
			t.Errorf("to %s: TLS %v (want %v), EHLO %q", m.Rcpts[0], m.TLS, wantTLS, m.Helo)
		}
	}
	e := h.waitAttempts(failing.ID, 1)
	if r := e.Rcpts[0]; r.Status != spool.Pending || !strings.HasPrefix(r.LastReply, "451 4.7.10 ") {
		t.Errorf("required TLS without STARTTLS: %+v", r)
	}
	if n := len(plain.Messages()); n != 0 {
		t.Errorf("%d messages sent in clear on a required-TLS route", n)
	}
}

// refusingGreeter accepts connections and greets them with 421 (RFC 5321
// §3.1: the server is not available).
func refusingGreeter(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("421 4.3.2 busy, try later\r\n"))
			c.Close()
		}
	})
	return l.Addr().String()
}

func TestFailoverOnRefusedGreeting(t *testing.T) {
	up := smtptest.NewServer(t)
	route := policy.Route{Domains: []string{"ex.test"}, Servers: []string{refusingGreeter(t), up.Addr()}}
	h := start(t, testConfig(route), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	up.WaitFor(1, waitLong)
	h.waitGone(env.ID)
}

func TestStalePooledConnection(t *testing.T) {
	srv := smtptest.NewServer(t)
	h := start(t, testConfig(serverRoute("ex.test", srv)), openSpool(t))
	first := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	// Gone from the queue: the server's 250 was read (the server keeps a
	// message before it answers, so WaitFor alone would let Stop cut
	// the reply off and defer bob).
	h.waitGone(first.ID)
	// The server goes away and back: the idle connection is dead.
	srv.Stop()
	srv.Restart()
	env := h.send("alice@sender.test", []string{"carol@ex.test"}, sample)
	srv.WaitFor(2, waitLong)
	h.waitGone(env.ID)
	if e := strings.Count(h.logs.String(), "msg=deferred"); e != 0 {
		t.Errorf("a dead pooled connection caused %d deferrals:\n%s", e, h.logs)
	}
}

// A server that ends an idle connection with 421 (as Postfix's smtpd at
// its idle timeout) leaves that reply unread in the pooled connection:
// the next transaction, sent pipelined on it, reads it as the reply to
// MAIL and goes again on a new connection, deferring nothing.
func TestPooledConnectionEndedWith421(t *testing.T) {
	srv := smtptest.NewServer(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { l.Close(); wg.Wait() })
	hangUp := make(chan struct{}) // closed: the first connection says 421 and ends
	hungUp := make(chan struct{}) // closed when it has
	wg.Go(func() {
		// A proxy to srv whose first connection the test ends.
		for first := true; ; first = false {
			c, err := l.Accept()
			if err != nil {
				return
			}
			up, err := net.Dial("tcp", srv.Addr())
			if err != nil {
				c.Close()
				return
			}
			wg.Go(func() { io.Copy(up, c); up.Close() })
			if !first {
				wg.Go(func() { io.Copy(c, up); c.Close() })
				continue
			}
			wg.Go(func() {
				done := make(chan struct{})
				go func() { io.Copy(c, up); close(done) }()
				select {
				case <-hangUp:
					up.Close()
					<-done
					c.Write([]byte("421 4.4.2 idle timeout\r\n"))
				case <-done:
				}
				c.Close()
				close(hungUp)
			})
		}
	})
	route := policy.Route{Domains: []string{"ex.test"}, Servers: []string{l.Addr().String()}, TLS: "none"}
	h := start(t, testConfig(route), openSpool(t))
	first := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	h.waitGone(first.ID)
	close(hangUp)
	select {
	case <-hungUp:
	case <-time.After(waitLong):
		t.Fatal("the proxy did not end the first connection")
	}
	env := h.send("alice@sender.test", []string{"carol@ex.test"}, sample)
	srv.WaitFor(2, waitLong)
	h.waitGone(env.ID)
	if e := strings.Count(h.logs.String(), "msg=deferred"); e != 0 {
		t.Errorf("a pooled connection ended with 421 caused %d deferrals:\n%s", e, h.logs)
	}
}

// A message whose envelope the SMTP client will not write (an address
// with a line break, which would inject a command) sends nothing: the
// pooled connection is as clean as before and carries the next message,
// as it does the retries of the refused one, and the next hop never sees
// a byte of that envelope.
func TestUnwritableEnvelopeKeepsConnection(t *testing.T) {
	srv := smtptest.NewServer(t)
	cfg := testConfig(serverRoute("ex.test", srv))
	cfg.Delivery.MaxConnections = 1
	h := start(t, cfg, openSpool(t))
	first := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	h.waitGone(first.ID)
	bad := h.send("alice@sender.test\r\nRCPT TO:<mallory@ex.test>", []string{"carol@ex.test"}, sample)
	h.waitAttempts(bad.ID, 2)
	next := h.send("alice@sender.test", []string{"dave@ex.test"}, sample)
	h.waitGone(next.ID)
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections, want 1: an envelope never sent spoiled none", n)
	}
	if msgs := srv.Messages(); len(msgs) != 2 || msgs[1].Rcpts[0] != "dave@ex.test" {
		t.Errorf("delivered %+v, want bob's and dave's messages", msgs)
	}
	for _, w := range srv.Transcripts() {
		if strings.Contains(w, "mallory") {
			t.Errorf("the next hop read the unwritable envelope:\n%s", w)
		}
	}
}

func TestDataRejectedOneDSN(t *testing.T) {
	srv := smtptest.NewServer(t)
	srv.SetDataReply(554)
	senders := smtptest.NewServer(t)
	h := start(t, testConfig(serverRoute("ex.test", srv), serverRoute("sender.test", senders)), openSpool(t), Workers(1))
	env := h.send("alice@sender.test", []string{"bob@ex.test", "carol@ex.test"}, sample)
	msgs := senders.WaitFor(1, waitLong)
	parts := smtptest.ParseDSN(t, msgs[0].Data)
	for _, rcpt := range []string{"bob@ex.test", "carol@ex.test"} {
		if !strings.Contains(parts.Status, "Final-Recipient: rfc822; "+rcpt+"\r\nAction: failed\r\nStatus: 5.0.0\r\n") {
			t.Errorf("DSN does not report %s:\n%s", rcpt, parts.Status)
		}
	}
	h.waitGone(env.ID)
	h.waitIdle()
	if n := len(senders.Messages()); n != 1 {
		t.Errorf("%d DSNs, want 1", n)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("server that rejected DATA recorded %d messages", n)
	}
}

// A message whose spool file fails to read halfway must not reach the
// next hop: go-smtp would end the message with "." before QUIT, and the
// server would take the first half as the whole message, then the whole
// one again on the next attempt.
func TestMessageCutOffIsNotDelivered(t *testing.T) {
	srv := smtptest.NewServer(t)
	cfg := testConfig(serverRoute("dest.test", srv))
	r, err := New(cfg, openSpool(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	c := r.conf.Load()
	env := &spool.Envelope{ID: "0000000000000000", From: "a@sender.test", Rcpts: []spool.Recipient{{Addr: "b@dest.test", Status: spool.Pending}}}
	g := c.groups(env)[0]
	broken := io.MultiReader(strings.NewReader(sample[:40]), iotest.ErrReader(errors.New("disk read error")))
	res := r.toSMTP(context.Background(), c, env, g, broken)
	if len(res) != 1 || res[0].status != spool.Pending {
		t.Fatalf("results %+v, want the recipient pending", res)
	}
	if msgs := srv.Messages(); len(msgs) != 0 {
		t.Fatalf("the next hop took the cut-off message: %q", msgs[0].Data)
	}
	// The next attempt delivers the message once, whole.
	res = r.toSMTP(context.Background(), c, env, g, strings.NewReader(sample))
	if len(res) != 1 || res[0].status != spool.Delivered {
		t.Fatalf("results %+v, want delivered", res)
	}
	msgs := srv.WaitFor(1, waitLong)
	if len(msgs) != 1 || string(msgs[0].Data) != sample {
		t.Fatalf("next hop has %d messages, first %q", len(msgs), msgs[0].Data)
	}
}

// A failing Maildir leaves the recipient pending with a reply that names
// no local path: the reply may end up in a DSN's Diagnostic-Code.
func TestMaildirFailureReplyIsGeneric(t *testing.T) {
	base := t.TempDir()
	// A file where the Maildir should be: nothing can be created under it.
	blocker := filepath.Join(base, "secret-mail-store")
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(blocker, "Maildir")
	h := start(t, testConfig(policy.Route{Domains: []string{"*"}, Maildir: dir}), openSpool(t))
	env := h.send("alice@sender.test", []string{"bob@ex.test"}, sample)
	got := h.waitAttempts(env.ID, 1)
	rc := got.Rcpts[0]
	if rc.Status != spool.Pending || rc.LastReply != "451 4.3.0 local delivery failed" || rc.LastHost != "maildir" {
		t.Fatalf("recipient %+v, want pending with a generic 451", rc)
	}
	if !strings.Contains(h.logs.String(), "secret-mail-store") {
		t.Errorf("the log lacks the detail:\n%s", h.logs)
	}
}
