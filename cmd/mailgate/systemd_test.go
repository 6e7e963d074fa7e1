package main

import (
	"bufio"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/mailgate/mailgate/policy"
)

// listenNotify is the service manager's end of NOTIFY_SOCKET: a real
// unixgram socket, as systemd makes one.
func listenNotify(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// readNotify returns the next datagram, waiting at most a minute.
func readNotify(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no sd_notify datagram: %v", err)
	}
	return string(buf[:n])
}

// TestNotifier: the states reach a unixgram socket, a path or an abstract
// name, as sd_notify(3) sends them; MONOTONIC_USEC is CLOCK_MONOTONIC now.
func TestNotifier(t *testing.T) {
	for _, name := range []string{filepath.Join(t.TempDir(), "notify"), fmt.Sprintf("@mailgate-test-%d", os.Getpid())} {
		conn := listenNotify(t, name)
		n := notifier{socket: name}
		if err := n.ready("taking mail\non two lines"); err != nil {
			t.Fatal(err)
		}
		if got := readNotify(t, conn); got != "READY=1\nSTATUS=taking mail" {
			t.Errorf("%s: ready sent %q", name, got)
		}
		var ts unix.Timespec
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		before := ts.Nano() / 1000
		if err := n.reloading(); err != nil {
			t.Fatal(err)
		}
		got := readNotify(t, conn)
		m := regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=([0-9]+)\nSTATUS=reloading$`).FindStringSubmatch(got)
		if m == nil {
			t.Fatalf("%s: reloading sent %q", name, got)
		}
		unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
		if usec, _ := strconv.ParseInt(m[1], 10, 64); usec < before || usec > ts.Nano()/1000 {
			t.Errorf("MONOTONIC_USEC=%d, not between %d and %d", usec, before, ts.Nano()/1000)
		}
		n.stopping()
		if got := readNotify(t, conn); got != "STOPPING=1\nSTATUS=stopping" {
			t.Errorf("%s: stopping sent %q", name, got)
		}
	}
	if err := (notifier{}).ready("x"); err != nil {
		t.Errorf("without NOTIFY_SOCKET: %v", err)
	}
}

// TestJournalLines: text lines for the journal carry their priority and no
// time; JSON lines, asked for, keep every field.
func TestJournalLines(t *testing.T) {
	var b strings.Builder
	cfg := &policy.Config{}
	cfg.Log.Level = "debug"
	log := newLeveledLogger(cfg, &b, new(slog.LevelVar), true)
	log.Info("accepted", "queue_id", "0F3K9", "duration", 1500*time.Microsecond)
	log.With("stage", "spf").WithGroup("dns").Warn("slow", "server", "127.0.0.1:53")
	log.Error("router stopped")
	log.Debug("detail")
	want := "<6>level=INFO msg=accepted queue_id=0F3K9 duration=1.5ms\n" +
		"<4>level=WARN msg=slow stage=spf dns.server=127.0.0.1:53\n" +
		"<3>level=ERROR msg=\"router stopped\"\n" +
		"<7>level=DEBUG msg=detail\n"
	if b.String() != want {
		t.Errorf("journal lines\n%s\nwant\n%s", b.String(), want)
	}

	b.Reset()
	cfg.Log.Format = "json"
	newLeveledLogger(cfg, &b, new(slog.LevelVar), true).Info("accepted", "queue_id", "0F3K9")
	if !regexp.MustCompile(`^\{"time":"[^"]+","level":"INFO","msg":"accepted","queue_id":"0F3K9"\}\n$`).MatchString(b.String()) {
		t.Errorf("json line %q", b.String())
	}
}

// TestUnderJournal: JOURNAL_STREAM counts only for the stream it names.
func TestUnderJournal(t *testing.T) {
	f, err := os.Create(filepath.Join(t.TempDir(), "stderr"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if !underJournal(journalStream(t, f), f) {
		t.Error("the stream JOURNAL_STREAM names is not taken for the journal")
	}
	g, _ := os.Create(filepath.Join(t.TempDir(), "other"))
	defer g.Close()
	for _, env := range []string{journalStream(t, g), "", "garbage"} {
		if underJournal(env, f) {
			t.Errorf("JOURNAL_STREAM=%q taken for the journal", env)
		}
	}
}

func journalStream(t *testing.T, f *os.File) string {
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%d:%d", st.Dev, st.Ino)
}

// TestServeUnderSystemd runs mailgate serve as systemd runs a Type=notify
// unit: READY=1 comes when the SMTP listener answers, a SIGHUP is
// RELOADING=1 then READY=1, SIGTERM STOPPING=1 and a clean exit, and the
// log lines on the journal stream have a priority and no time.
func TestServeUnderSystemd(t *testing.T) {
	dir := t.TempDir()
	config := filepath.Join(dir, "mailgate.toml")
	os.WriteFile(config, []byte(fmt.Sprintf(`hostname = "mx.example.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = ""
[[route]]
domains = ["example.test"]
maildir = %q
`, filepath.Join(dir, "data"), filepath.Join(dir, "maildir"))), 0o644)
	journal, err := os.Create(filepath.Join(dir, "journal"))
	if err != nil {
		t.Fatal(err)
	}
	defer journal.Close()
	sock := filepath.Join(dir, "notify")
	conn := listenNotify(t, sock)

	cmd := exec.Command(mailgateBin, "serve", "-config", config)
	cmd.Stderr = journal
	cmd.Env = append(os.Environ(), "NOTIFY_SOCKET="+sock, "JOURNAL_STREAM="+journalStream(t, journal))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			<-done
		}
	}()

	got := readNotify(t, conn)
	m := regexp.MustCompile(`^READY=1\nSTATUS=taking mail on \[(127\.0\.0\.1:[0-9]+)\]$`).FindStringSubmatch(got)
	if m == nil {
		t.Fatalf("first notification %q", got)
	}
	c, err := net.DialTimeout("tcp", m[1], 10*time.Second)
	if err != nil {
		t.Fatalf("READY=1 but the listener does not answer: %v", err)
	}
	c.SetReadDeadline(time.Now().Add(time.Minute))
	if banner, _ := bufio.NewReader(c).ReadString('\n'); !strings.HasPrefix(banner, "220 ") {
		t.Errorf("banner %q", banner)
	}
	c.Close()

	cmd.Process.Signal(syscall.SIGHUP)
	if got := readNotify(t, conn); !regexp.MustCompile(`^RELOADING=1\nMONOTONIC_USEC=[0-9]+\n`).MatchString(got) {
		t.Errorf("on SIGHUP: %q", got)
	}
	if got := readNotify(t, conn); !strings.HasPrefix(got, "READY=1\nSTATUS=taking mail on") {
		t.Errorf("after the reload: %q", got)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if got := readNotify(t, conn); !strings.HasPrefix(got, "STOPPING=1\n") {
		t.Errorf("on SIGTERM: %q", got)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("mailgate serve did not stop on SIGTERM")
	}

	log, _ := os.ReadFile(journal.Name())
	for _, want := range []string{"<6>level=INFO msg=\"mailgate started\"", "<6>level=INFO msg=reloaded config="} {
		if !strings.Contains(string(log), want) {
			t.Errorf("journal lacks %q:\n%s", want, log)
		}
	}
	for line := range strings.Lines(string(log)) {
		if !regexp.MustCompile(`^<[3-7]>level=`).MatchString(line) || strings.Contains(line, "time=") {
			t.Errorf("journal line %q: want <priority>level=... without time=", line)
		}
	}
}
