package gateway_test

import (
	"bufio"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// The fault suite: each case runs the real gateway under a stream of
// messages while something breaks, and ends by comparing the Message-IDs
// that got a 250 with those that arrived downstream.

// ledger records what a stream of messages was told.
type ledger struct {
	mu       sync.Mutex
	acked    map[string]bool // got 250
	refused  map[string]string
	attempts int
}

func newLedger() *ledger {
	return &ledger{acked: map[string]bool{}, refused: map[string]string{}}
}

func (l *ledger) record(id, reply string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.attempts++
	if strings.HasPrefix(reply, "250") {
		l.acked[id] = true
	} else {
		l.refused[id] = reply
	}
}

// check waits until every acknowledged message arrived downstream and the
// gateway's queue is empty, so that nothing more can arrive; then it
// fails if one is missing or duplicated, or if a refused one arrived.
func (l *ledger) check(t *testing.T, g *gateway.Gateway, down *smtptest.Server) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	count := func() (missing, dup, leaked []string) {
		got := map[string]int{}
		for _, m := range down.Messages() {
			got[messageID(m.Data)]++
		}
		for id := range l.acked {
			switch n := got[id]; {
			case n == 0:
				missing = append(missing, id)
			case n > 1:
				dup = append(dup, id)
			}
		}
		for id := range l.refused {
			if got[id] > 0 {
				leaked = append(leaked, id)
			}
		}
		return missing, dup, leaked
	}
	deadline := time.Now().Add(waitLong)
	for {
		missing, _, _ := count()
		if len(missing) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never arrived: %v", len(missing), len(l.acked), missing[:min(5, len(missing))])
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitQueueEmpty(t, g)
	if _, dup, leaked := count(); len(dup) > 0 || len(leaked) > 0 {
		t.Fatalf("duplicated %v, refused but delivered %v", dup, leaked)
	}
	t.Logf("%d sent: %d acknowledged and delivered once, %d refused", l.attempts, len(l.acked), len(l.refused))
}

// TestPluginBinaryRemoved: the plugin's executable disappears and its
// process dies, so it cannot be restarted. The gateway keeps serving, every
// message gets the stage's on_error (a 4xx here), none is lost, and once the
// binary is back filtering resumes.
func TestPluginBinaryRemoved(t *testing.T) {
	down := smtptest.NewServer(t)
	bin := filepath.Join(t.TempDir(), "testplugin-removed")
	b, err := os.ReadFile(testPluginBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, routeTo(down, "dest.test")+pluginStage("marker", bin, "2s", "tempfail", `add_header = "X-Filtered: yes"`))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	l := newLedger()
	send := func(i int) string {
		id := fmt.Sprintf("rm%d@test", i)
		r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n"))
		l.record(id, r)
		return r
	}
	for i := range 3 {
		if r := send(i); !strings.HasPrefix(r, "250") {
			t.Fatalf("before removal: %q", r)
		}
	}
	os.Remove(bin)
	for _, pid := range pluginPIDs(t, bin+" (deleted)") {
		syscallKill(pid)
	}
	deferred := 0
	for i := 3; i < 13; i++ {
		r := send(i)
		if strings.HasPrefix(r, "4") {
			deferred++
		} else if !strings.HasPrefix(r, "250") {
			t.Fatalf("message %d while the plugin is gone: %q", i, r)
		}
	}
	if deferred == 0 {
		t.Fatal("no message got on_error while the plugin binary was missing")
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// The plugin comes back at its next restart, at most RestartMax (30s)
	// after the binary does.
	deadline := time.Now().Add(2 * waitLong)
	for i := 13; ; i++ {
		if r := send(i); strings.HasPrefix(r, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("filtering did not resume once the binary was back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.check(t, g, down)
	for _, m := range down.Messages() {
		if !strings.Contains(string(m.Data), "X-Filtered: yes\r\n") {
			t.Fatalf("a message passed unfiltered: %s", messageID(m.Data))
		}
	}
}

// stream sends messages to b@dest.test one after another on one
// connection until stop is closed, and reports each transaction: its
// Message-ID, the first reply that was not a success (or the final 250),
// and when it started and ended. It returns an error only if the
// connection broke: a gateway that hangs or drops a client is a failure.
func stream(addr net.Addr, prefix string, stop <-chan struct{}, report func(id, reply string, start, end time.Time)) error {
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	if err != nil {
		return err
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	// say sends a line (if any) and reads the reply; the deadline is an
	// upper bound for a gateway that stopped answering.
	say := func(line string) (string, error) {
		conn.SetDeadline(time.Now().Add(time.Minute))
		if line != "" {
			if _, err := io.WriteString(conn, line); err != nil {
				return "", err
			}
		}
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				return "", fmt.Errorf("%s: %w", strings.TrimSpace(line), err)
			}
			if len(l) < 5 {
				return "", fmt.Errorf("%s: short reply %q", strings.TrimSpace(line), l)
			}
			if l[3] != '-' {
				return strings.TrimRight(l, "\r\n"), nil
			}
		}
	}
	for _, line := range []string{"", "EHLO client.test\r\n"} {
		if reply, err := say(line); err != nil || (reply[0] != '2') {
			return fmt.Errorf("greeting or EHLO: %q, %v", reply, err)
		}
	}
	for i := 0; ; i++ {
		select {
		case <-stop:
			return nil
		default:
		}
		id := fmt.Sprintf("%s-%d@test", prefix, i)
		start := time.Now()
		var reply string
		for _, line := range []string{"MAIL FROM:<a@sender.test>\r\n", "RCPT TO:<b@dest.test>\r\n", "DATA\r\n", message(id, "x\r\n") + ".\r\n"} {
			if reply, err = say(line); err != nil {
				return err
			}
			if reply[0] != '2' && reply[0] != '3' {
				break
			}
		}
		report(id, reply, start, time.Now())
		if reply[0] != '2' {
			if _, err := say("RSET\r\n"); err != nil {
				return err
			}
		}
	}
}

// httpGet returns the status and body of a GET.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestPluginKilledMidStream: kill -9 of a stage plugin while several
// clients send mail and more calls than the circuit's failure limit (5)
// are in the plugin. Messages whose checks the crash cut short get the
// stage's on_error (451, never a hang or a loss); the plugin is
// restarted, and from the moment /healthz shows the new process up,
// every message is accepted and filtered again. The tempfails last no
// longer than the restart: one crash does not open the circuit, however
// many calls it cut short. The test logs how long they lasted.
func TestPluginKilledMidStream(t *testing.T) {
	const clients, sleepers = 4, 8
	down := smtptest.NewServer(t)
	bin := filepath.Join(t.TempDir(), "testplugin-kill") // own copy: its pid is ours alone
	b, err := os.ReadFile(testPluginBin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	// The timeout is an upper bound only: a killed plugin's calls fail at
	// once.
	logs := &testkit.SyncBuffer{}
	g := startGatewayOpts(t, routeTo(down, "dest.test")+pluginStage("marker", bin, "30s", "tempfail", "add_header = \"X-Filtered: yes\"\nsleep = \"1h\""),
		gateway.Options{Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	healthz := "http://" + g.AdminAddr().String() + "/healthz"
	pids := pluginPIDs(t, bin)
	if len(pids) != 1 {
		t.Fatalf("plugin processes: %v", pids)
	}

	type txn struct {
		id, reply  string
		start, end time.Time
	}
	var mu sync.Mutex
	var txns []txn
	l := newLedger()
	count := func(f func(txn) bool) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, x := range txns {
			if f(x) {
				n++
			}
		}
		return n
	}
	stop := make(chan struct{})
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			err := stream(g.SMTPAddrs()[0], fmt.Sprintf("k%d", w), stop, func(id, reply string, start, end time.Time) {
				mu.Lock()
				txns = append(txns, txn{id, reply, start, end})
				mu.Unlock()
				l.record(id, reply)
			})
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", w, err)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	accepted := func(x txn) bool { return strings.HasPrefix(x.reply, "250") }
	waitUntil(t, time.Minute, "mail to flow", func() bool { return count(accepted) >= 5*clients })
	// The test plugin sleeps in the MAIL call of sleep@ senders: those
	// calls are surely in flight when it is killed.
	asleep := make(chan string, sleepers)
	for range sleepers {
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO sleeper.test", "250")
		// Pipelined (RFC 2920): MAIL's verdict is given at RCPT.
		c.Send("MAIL FROM:<sleep@sender.test>\r\nRCPT TO:<b@dest.test>\r\n")
		go func() {
			var line string
			for range 2 {
				line, _ = c.ReadLine()
			}
			asleep <- strings.TrimSpace(line)
		}()
	}
	waitUntil(t, time.Minute, "the sleepers' calls to reach the plugin", func() bool {
		return strings.Count(logs.String(), `"msg":"testplugin sleeping"`) == sleepers
	})

	if err := syscallKill(pids[0]); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	for range sleepers {
		if r := <-asleep; !strings.HasPrefix(r, "451 ") {
			t.Fatalf("RCPT after a MAIL check the kill cut short: %q, want on_error's 451", r)
		}
	}
	var up time.Time
	waitUntil(t, time.Minute, "/healthz to show the restarted plugin up", func() bool {
		now := pluginPIDs(t, bin)
		if len(now) != 1 || now[0] == pids[0] {
			return false
		}
		code, body := httpGet(t, healthz)
		if strings.Contains(body, "\nstage marker: down: circuit open") {
			t.Fatalf("one crash opened the circuit:\n%s", body)
		}
		if code == 200 && strings.Contains(body, fmt.Sprintf("\nstage marker: ok: up, pid %d\n", now[0])) {
			up = time.Now()
			return true
		}
		return false
	})
	sentAfter := func(x txn) bool { return x.start.After(up) }
	waitUntil(t, time.Minute, "mail to flow after the restart", func() bool { return count(sentAfter) >= 5*clients })
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}

	var tempfails int
	var lastTempfail time.Time
	for _, x := range txns {
		switch {
		case accepted(x):
		case strings.HasPrefix(x.reply, "451 "):
			tempfails++
			if x.end.After(lastTempfail) {
				lastTempfail = x.end
			}
			if sentAfter(x) {
				t.Errorf("message %s, sent once the restarted plugin was up, got %q", x.id, x.reply)
			}
		default:
			t.Errorf("message %s: %q", x.id, x.reply)
		}
	}
	var lasted time.Duration
	if tempfails > 0 {
		lasted = lastTempfail.Sub(killed).Round(time.Millisecond)
	}
	t.Logf("kill -9 of a plugin under %d clients: %d of %d messages tempfailed, the last %v after the kill; /healthz showed the restarted plugin up %v after the kill",
		clients, tempfails, len(txns), lasted, up.Sub(killed).Round(time.Millisecond))
	l.check(t, g, down)
	for _, m := range down.Messages() {
		if !strings.Contains(string(m.Data), "X-Filtered: yes\r\n") {
			t.Fatalf("a message passed unfiltered: %s", messageID(m.Data))
		}
	}
}

// dialFrom connects from a chosen loopback source address, so tests can
// play several clients on one machine.
func dialFrom(t *testing.T, src string, addr net.Addr) (net.Conn, error) {
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	return d.Dial("tcp", addr.String())
}

// TestSlowlorisAndFlood: one address opens far more connections than it may
// and dribbles bytes into them; the per-client limit holds (421) and
// another client is served normally throughout.
func TestSlowlorisAndFlood(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_connections_per_ip = 20\nmax_connections = 200\ncommand_timeout = \"3s\"\n"+routeTo(down, "dest.test"))
	addr := g.SMTPAddrs()[0]

	var refused, open int
	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for range 60 {
		conn, err := dialFrom(t, "127.0.0.2", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, conn)
		conn.SetReadDeadline(time.Now().Add(waitLong))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		switch {
		case strings.HasPrefix(line, "220"):
			open++
		case strings.HasPrefix(line, "421 4.7.0"):
			refused++
		default:
			t.Fatalf("flood connection got %q", line)
		}
	}
	if open != 20 || refused != 40 {
		t.Fatalf("per-client limit 20: %d open, %d refused", open, refused)
	}
	// Slowloris: the open ones send a command one byte at a time.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, c := range conns[:20] {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, b := range []byte("EHLO slow.test\r\n") {
				select {
				case <-stop:
					return
				case <-time.After(100 * time.Millisecond):
				}
				c.Write([]byte{b})
			}
		}()
	}
	// Meanwhile a different client sends mail as usual.
	l := newLedger()
	for i := range 5 {
		conn, err := dialFrom(t, "127.0.0.3", addr)
		if err != nil {
			t.Fatal(err)
		}
		c := testkit.NewSMTPClient(t, conn)
		conn.SetDeadline(time.Now().Add(waitLong))
		c.Expect("220")
		c.Cmd("EHLO good.test", "250")
		id := fmt.Sprintf("good%d@test", i)
		l.record(id, c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n")))
		conn.Close()
	}
	close(stop)
	wg.Wait()
	if len(l.acked) != 5 {
		t.Fatalf("the good client was not served: %v", l.refused)
	}
	l.check(t, g, down)
}
