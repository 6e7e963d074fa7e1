package gateway_test

import (
	"bufio"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/router/routertest"
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

// check waits until every acknowledged message arrived downstream exactly
// once and fails if one is missing or duplicated, or if a refused one
// arrived.
func (l *ledger) check(t *testing.T, down *routertest.Server, within time.Duration) {
	t.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	deadline := time.Now().Add(within)
	for {
		got := map[string]int{}
		for _, m := range down.Messages() {
			got[messageID(m.Data)]++
		}
		var missing, dup, leaked []string
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
		if len(dup) > 0 || len(leaked) > 0 {
			t.Fatalf("duplicated %v, refused but delivered %v", dup, leaked)
		}
		if len(missing) == 0 {
			t.Logf("%d sent: %d acknowledged and delivered once, %d refused", l.attempts, len(l.acked), len(l.refused))
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d acknowledged messages never arrived: %v", len(missing), len(l.acked), missing[:min(5, len(missing))])
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestPluginBinaryRemoved: the plugin's executable disappears and its
// process dies, so it cannot be restarted. The gateway keeps serving, every
// message gets the stage's on_error (a 4xx here), none is lost, and once the
// binary is back filtering resumes.
func TestPluginBinaryRemoved(t *testing.T) {
	down := routertest.NewServer(t)
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
	c.cmd("EHLO client.test", "250")
	l := newLedger()
	send := func(i int) string {
		id := fmt.Sprintf("rm%d@test", i)
		r := c.trySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n"))
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
		time.Sleep(30 * time.Millisecond)
	}
	if deferred == 0 {
		t.Fatal("no message got on_error while the plugin binary was missing")
	}
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(45 * time.Second)
	for i := 13; ; i++ {
		if r := send(i); strings.HasPrefix(r, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("filtering did not resume once the binary was back")
		}
		time.Sleep(200 * time.Millisecond)
	}
	l.check(t, down, 10*time.Second)
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
	down := routertest.NewServer(t)
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
		conn.SetReadDeadline(time.Now().Add(5 * time.Second))
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
		c := &client{t: t, conn: conn, r: bufio.NewReader(conn)}
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		c.expect("220")
		c.cmd("EHLO good.test", "250")
		id := fmt.Sprintf("good%d@test", i)
		l.record(id, c.trySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n")))
		conn.Close()
	}
	close(stop)
	wg.Wait()
	if len(l.acked) != 5 {
		t.Fatalf("the good client was not served: %v", l.refused)
	}
	l.check(t, down, 10*time.Second)
}
