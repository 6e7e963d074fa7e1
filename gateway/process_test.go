package gateway_test

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// Binaries built once for the tests that run them as separate processes:
// mailgate itself (kill -9, swaks), the plugin host's test plugin and the
// example third-party plugin.
var mailgateBin, testPluginBin, exeblockBin string

func TestMain(m *testing.M) {
	flag.Parse()
	if f := flag.Lookup("test.fuzzworker"); f != nil && f.Value.String() == "true" {
		// A fuzzing worker runs only the fuzz target, which needs none of
		// the binaries; building them would stall the worker's start.
		os.Exit(m.Run())
	}
	if fuzz, run := flag.Lookup("test.fuzz"), flag.Lookup("test.run"); fuzz != nil && fuzz.Value.String() != "" &&
		run != nil && run.Value.String() == "^$" {
		// So does the coordinator when no test runs beside the target
		// (make fuzz): the three -race builds took longer than the
		// fuzzing on a loaded machine.
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "mailgate-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mailgateBin = filepath.Join(dir, "mailgate")
	testPluginBin = filepath.Join(dir, "testplugin")
	exeblockBin = filepath.Join(dir, "exeblock")
	for bin, pkg := range map[string]string{mailgateBin: "../cmd/mailgate", testPluginBin: "../plugins/internal/testplugin", exeblockBin: exeblockModule} {
		// -buildvcs=auto over a GOFLAGS that turns it off: mailgate
		// reports the revision it was built from.
		build := exec.Command("go", "build", "-race", "-buildvcs=auto", "-o", bin, pkg)
		if pkg == exeblockModule {
			// A module of its own, built as its author builds it.
			build = exec.Command("go", "build", "-race", "-o", bin, ".")
			build.Dir = pkg
		}
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "build", pkg, err)
			os.Exit(1)
		}
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// exeblockModule is the example third-party plugin, a module of its own.
const exeblockModule = "../examples/plugins/exeblock"

// process is a mailgate serve running as a child process.
type process struct {
	cmd  *exec.Cmd
	addr string
	log  *strings.Builder
	mu   sync.Mutex
}

var listeningRE = regexp.MustCompile(`msg=listening addr=(\S+)`)

// startProcess runs `mailgate serve -config FILE` and waits until it listens.
func startProcess(t *testing.T, configFile string) *process {
	t.Helper()
	cmd := exec.Command(mailgateBin, "serve", "-config", configFile)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: cmd, log: &strings.Builder{}}
	addrc := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			p.mu.Lock()
			p.log.WriteString(sc.Text() + "\n")
			p.mu.Unlock()
			if m := listeningRE.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case addrc <- m[1]:
				default:
				}
			}
		}
		io.Copy(io.Discard, stderr)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			p.mu.Lock()
			t.Logf("mailgate log:\n%s", p.log.String())
			p.mu.Unlock()
		}
	})
	select {
	case p.addr = <-addrc:
	case <-time.After(30 * time.Second):
		t.Fatal("mailgate did not start listening")
	}
	return p
}

func (p *process) kill9(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	p.cmd.Wait()
}

// killMaxConnections is delivery.max_connections in writeConfig: with one
// downstream server, at most this many deliveries are in flight at once,
// so at most this many can be repeated after a kill -9.
const killMaxConnections = 2

func writeConfig(t *testing.T, dataDir string, down *smtptest.Server) string {
	t.Helper()
	cfg := fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = ""
[delivery]
retry_min = "100ms"
retry_max = "500ms"
max_connections = %d
[[route]]
domains = ["dest.test"]
servers = [%q]
`, dataDir, killMaxConnections, down.Addr())
	f := filepath.Join(t.TempDir(), "mailgate.toml")
	if err := os.WriteFile(f, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// TestKill9MidLoadLosesNothing sends a stream of messages from several
// clients, kills the gateway with SIGKILL while they are being accepted and
// relayed, restarts it on the same data dir, three times, and checks that
// every message that got a 250 reached the downstream server, and that
// the only messages delivered twice are those whose delivery was in
// flight at a kill: a delivery is marked done in the spool as soon as the
// downstream server's 250 is read, so a process crash repeats no more
// than the deliveries under way, at most delivery.max_connections to the
// one server per kill.
func TestKill9MidLoadLosesNothing(t *testing.T) {
	const kills = 3
	down := smtptest.NewServer(t)
	// Half the messages also go to a recipient the server defers, so the
	// router keeps retrying and updating envelopes while others are
	// delivered, as in a real queue.
	down.SetRcptReply("later@dest.test", 451)
	data := tempDir(t)
	conf := writeConfig(t, data, down)
	p := startProcess(t, conf)

	var mu sync.Mutex
	acked := map[string]bool{}
	for round := range kills {
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					id := fmt.Sprintf("r%d-w%d-%d@crash.test", round, w, i)
					rcpts := []string{"b@dest.test"}
					if w%2 == 1 {
						rcpts = append(rcpts, "later@dest.test")
					}
					if !sendOne(p.addr, id, rcpts...) {
						return // the gateway is gone
					}
					mu.Lock()
					acked[id] = true
					mu.Unlock()
				}
			}()
		}
		// Kill once a fair number of messages is in and some went out.
		wantAcked, wantDown := len(acked)+40, len(down.Messages())+20
		waitUntil(t, 60*time.Second, "mail to be accepted and relayed before the kill", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(acked) >= wantAcked && len(down.Messages()) >= wantDown
		})
		p.kill9(t)
		close(stop)
		wg.Wait()
		p = startProcess(t, conf)
	}

	mu.Lock()
	defer mu.Unlock()
	var got map[string]int
	waitUntil(t, 60*time.Second, "every acknowledged message to arrive", func() bool {
		got = map[string]int{}
		for _, m := range down.Messages() {
			got[messageID(m.Data)]++
		}
		for id := range acked {
			if got[id] == 0 {
				return false
			}
		}
		return true
	})
	var dups []string
	for id, n := range got {
		for range n - 1 {
			dups = append(dups, id)
		}
	}
	t.Logf("%d kill -9s: %d acknowledged, %d deliveries downstream, %d repeated", kills, len(acked), len(down.Messages()), len(dups))
	if len(dups) > kills*killMaxConnections {
		t.Errorf("%d deliveries repeated after %d kill -9s; at most %d can be in flight (delivery.max_connections = %d): %v",
			len(dups), kills, kills*killMaxConnections, killMaxConnections, dups)
	}
}

// waitUntil polls cond until it holds, failing the test after limit.
func waitUntil(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v still waiting for %s", limit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// sendOne sends one message, to b@dest.test unless rcpts says otherwise,
// and reports whether it got a 250.
func sendOne(addr, id string, rcpts ...string) bool {
	if len(rcpts) == 0 {
		rcpts = []string{"b@dest.test"}
	}
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return false
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLong))
	r := bufio.NewReader(conn)
	read := func() string {
		var last string
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return ""
			}
			last = line
			if len(line) < 4 || line[3] != '-' {
				return last
			}
		}
	}
	if !strings.HasPrefix(read(), "220") {
		return false
	}
	fmt.Fprintf(conn, "EHLO c.test\r\n")
	if !strings.HasPrefix(read(), "250") {
		return false
	}
	// Pipelined (RFC 2920): MAIL, RCPT and DATA in one write.
	cmds := "MAIL FROM:<a@sender.test>\r\n"
	want := []string{"250"}
	for _, rc := range rcpts {
		cmds += "RCPT TO:<" + rc + ">\r\n"
		want = append(want, "250")
	}
	fmt.Fprintf(conn, "%sDATA\r\n", cmds)
	for _, w := range append(want, "354") {
		if !strings.HasPrefix(read(), w) {
			return false
		}
	}
	fmt.Fprintf(conn, "%s.\r\n", message(id, strings.Repeat("body line\r\n", 50)))
	ok := strings.HasPrefix(read(), "250")
	fmt.Fprintf(conn, "QUIT\r\n")
	return ok
}

// TestSwaksThroughServe is the first thing a user does: send a message with
// swaks through `mailgate serve` and see it arrive downstream, with the
// gateway's Received field on top and the body byte for byte.
func TestSwaksThroughServe(t *testing.T) {
	swaks := testkit.Need(t, "swaks", "swaks")
	down := smtptest.NewServer(t)
	p := startProcess(t, writeConfig(t, tempDir(t), down))
	host, port, _ := net.SplitHostPort(p.addr)
	msg := "From: a@sender.test\r\nTo: b@dest.test\r\nSubject: swaks test\r\nMessage-ID: <swaks@test>\r\n\r\n" +
		"Hello from swaks.\r\n.A line that starts with a dot.\r\n\xc3\x9cn\xc3\xafc\xc3\xb6d\xc3\xa9 8-bit line.\r\n"
	file := filepath.Join(t.TempDir(), "msg.eml")
	// swaks ends DATA with CRLF.CRLF after the file, adding the last CRLF.
	if err := os.WriteFile(file, []byte(strings.TrimSuffix(msg, "\r\n")), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(swaks, "--server", host, "--port", port,
		"--ehlo", "swaks.client.test", "--from", "a@sender.test", "--to", "b@dest.test",
		"--data", "@"+file).CombinedOutput()
	if err != nil {
		t.Fatalf("swaks: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "<-  250 2.0.0 Ok: queued as ") {
		t.Fatalf("swaks did not get a 250 with a queue ID:\n%s", out)
	}
	msgs := down.WaitFor(1, waitLong)
	data := string(msgs[0].Data)
	if !strings.HasPrefix(data, "Received: from swaks.client.test ([127.0.0.1])\r\n\tby mx.gateway.test (mailgate) with ESMTP id ") {
		t.Fatalf("no Received field on top:\n%s", data)
	}
	// Below our Received field the message is byte for byte what swaks sent.
	if _, rest, _ := strings.Cut(data, "\r\nFrom: "); "From: "+rest != msg {
		t.Fatalf("message differs:\n got %q\nwant %q", data, msg)
	}
}
