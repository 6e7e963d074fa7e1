package host

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/testkit"
)

// testPlugin is the path of plugins/internal/testplugin, built by TestMain.
var testPlugin string

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		helperMain()
		return
	}
	dir, err := os.MkdirTemp("", "mailgate-host-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	testPlugin = filepath.Join(dir, "testplugin")
	build := exec.Command("go", "build", "-o", testPlugin, "github.com/mailgate/mailgate/plugins/internal/testplugin")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build testplugin:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

var discard = slog.New(slog.DiscardHandler)

// current returns the running process, nil while down.
func (p *Plugin) current() *proc {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	return p.p.cur
}

// logBuffer collects log output a test reads while it is written.
type logBuffer = testkit.SyncBuffer

func startTest(t testing.TB, spec Spec) *Plugin {
	t.Helper()
	if spec.Cmd == nil {
		spec.Cmd = []string{testPlugin}
	}
	if spec.Name == "" {
		spec.Name = "test"
	}
	if spec.Logger == nil {
		spec.Logger = discard
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	p, err := Start(ctx, spec)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func dataTx(from string, body stages.Body) *stages.Transaction {
	return &stages.Transaction{
		QueueID: "Q1",
		Client:  stages.Client{Addr: netip.MustParseAddr("192.0.2.7"), Port: 40000, Helo: "client.test"},
		From:    from,
		Rcpts:   []string{"user@example.test"},
		Header:  stages.Header{{Name: "Subject", Value: "caf\xe9, Latin-1 as mail often is"}, {Name: "From", Value: "a@example.org"}},
		Body:    body,
	}
}

func run(p *Plugin, timeout time.Duration, tx *stages.Transaction) (stages.Verdict, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return p.Run(ctx, stages.Data, tx)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return fmt.Sprintf("%d %x", len(b), sum)
}

// waitLong bounds waits and calls that must end long before it on any
// machine: an upper bound for a loaded one, never a measure.
const waitLong = 30 * time.Second

// waitFor polls cond every 50ms for at most limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", limit, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRoundTrip(t *testing.T) {
	logs := &logBuffer{}
	p := startTest(t, Spec{
		Name:   "rt",
		Config: []byte(`{"action": "tag", "score": 2.5, "reply": "not wanted here", "add_header": "X-Test: yes", "results": ["clean", "listed"]}`),
		Logger: slog.New(slog.NewJSONHandler(logs, nil)),
	})

	if got, want := p.Info(), (stages.Info{
		Kind: "testplugin", Version: "1", Phases: stages.AllPhases, Edits: true,
		Needs:   stages.NeedEnvelope | stages.NeedHeader | stages.NeedBody | stages.NeedResults,
		Results: []string{"clean", "listed"},
	}); !reflect.DeepEqual(got, want) {
		t.Errorf("Info() = %+v, want %+v", got, want)
	}
	if p.Name() != "rt" {
		t.Errorf("Name() = %q", p.Name())
	}

	body := []byte("Hello.\r\n")
	v, err := run(p, waitLong, dataTx("a@example.org", stages.BytesBody(body)))
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != stages.Tag || v.Score != 2.5 || v.Result != digest(body) {
		t.Errorf("verdict %+v", v)
	}
	if v.Reply == nil || v.Reply.String() != "550 5.7.1 not wanted here" {
		t.Errorf("reply %v", v.Reply)
	}
	wantEdits := []stages.Edit{{Op: stages.HeaderAdd, Name: "X-Test", Value: "yes"}}
	if fmt.Sprint(v.Edits) != fmt.Sprint(wantEdits) {
		t.Errorf("edits %+v, want %+v", v.Edits, wantEdits)
	}

	// Mail is not always UTF-8; the plugin gets the bytes as they came.
	v, err = run(p, waitLong, dataTx("a@example.org", nil))
	if err != nil || v.Result != "caf\xe9, Latin-1 as mail often is" {
		t.Errorf("Subject as the plugin saw it: %q, %v", v.Result, err)
	}

	// The plugin's slog line keeps its level; a plain stderr line arrives
	// through go-plugin's stdio stream, so it may lag.
	waitFor(t, waitLong, "plugin log lines in the gateway log:\n"+logs.String(), func() bool {
		s := logs.String()
		return strings.Contains(s, `"level":"WARN","msg":"testplugin configured","stage":"rt"`) &&
			strings.Contains(s, `"msg":"testplugin plain stderr line","stage":"rt","stream":"stderr"`)
	})
}

// TestHeaderBytes: a plugin gets each header field as the message has it,
// byte for byte, whatever the spacing after the colon, and lines that
// are no field; fields made by the gateway arrive as "Name: value".
func TestHeaderBytes(t *testing.T) {
	p := startTest(t, Spec{Name: "hdr"})
	const block = "Subject:x\r\nTo:  two@example.test\r\nX-Folded:\r\n\tfolded \r\nnot a field\r\nFrom: a@example.org\r\n"
	h, err := stages.ParseHeader(bufio.NewReader(strings.NewReader(block + "\r\n")))
	if err != nil {
		t.Fatal(err)
	}
	h = append(h, stages.Field{Name: "X-Made", Value: "here"})
	tx := dataTx("header@example.org", nil)
	tx.Header = h
	v, err := run(p, waitLong, tx)
	if want := block + "X-Made: here\r\n\r\n"; err != nil || v.Result != want {
		t.Errorf("the plugin got\n%q (%v)\nwant\n%q", v.Result, err, want)
	}
}

// TestEnv checks that the Env the gateway fills from its config reaches
// the plugin's factory across the process boundary, and that a zero
// DNSTimeout stays zero (not set) rather than becoming some default.
func TestEnv(t *testing.T) {
	for _, env := range []stages.Env{
		{Hostname: "mx.example.test", DNSServers: []string{"127.0.0.1:5353", "[::1]:53"}, DNSTimeout: 1500 * time.Millisecond, DataDir: "/var/lib/mailgate"},
		{Hostname: "mx.example.test"},
	} {
		p := startTest(t, Spec{Name: "env", Env: env})
		v, err := run(p, waitLong, dataTx("env@example.org", nil))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%+v", env); v.Result != want {
			t.Errorf("plugin saw Env %s, want %s", v.Result, want)
		}
	}
}

func TestConfigRefused(t *testing.T) {
	for _, tc := range []struct {
		config, key, text string
	}{
		{`{"bogus": 1}`, "bogus", `config: bogus: unknown key`},
		{`{"sleep": 5}`, "sleep", `config: sleep: unexpected number; expect a duration with a unit such as "30s"`},
		{`{"sleep": "soon"}`, "sleep", `config: sleep: unexpected "soon"; expect a duration with a unit`},
		{`{"garbage": "lots"}`, "garbage", `config: garbage: unexpected "lots"; expect action or edit`},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		p, err := Start(ctx, Spec{Name: "cfg", Cmd: []string{testPlugin}, Config: []byte(tc.config), Logger: discard})
		cancel()
		if err == nil {
			p.Close()
			t.Errorf("%s: Start succeeded", tc.config)
			continue
		}
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || !strings.Contains(err.Error(), tc.text) ||
			!strings.HasPrefix(err.Error(), `stage "cfg": `) {
			t.Errorf("%s: error %q (%#v), want key %q and %q", tc.config, err, ce, tc.key, tc.text)
		}
	}
}

func TestSHA256Pin(t *testing.T) {
	b, err := os.ReadFile(testPlugin)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	good := hex.EncodeToString(sum[:])

	p := startTest(t, Spec{SHA256: strings.ToUpper(good)})
	if _, err := run(p, waitLong, dataTx("a@example.org", nil)); err != nil {
		t.Errorf("pinned plugin: %v", err)
	}

	bad := strings.Repeat("0", 64)
	_, err = Start(context.Background(), Spec{Name: "pin", Cmd: []string{testPlugin}, SHA256: bad, Logger: discard})
	if err == nil || !strings.Contains(err.Error(), "sha256 "+good) || !strings.Contains(err.Error(), "pins "+bad) {
		t.Errorf("Start with a wrong pin: %v", err)
	}
}

// TestMissingBinary: Start of a binary that is not there fails at once,
// not at its StartTimeout (an hour here, longer than the test waits).
func TestMissingBinary(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "no-such-plugin")
	done := make(chan error, 1)
	go func() {
		_, err := Start(context.Background(), Spec{Name: "gone", Cmd: []string{missing}, StartTimeout: time.Hour, Logger: discard})
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "no such file") || !strings.Contains(err.Error(), `stage "gone"`) {
			t.Errorf("Start of a missing binary: %v", err)
		}
	case <-time.After(waitLong):
		t.Fatalf("Start of a missing binary still waiting after %v", waitLong)
	}
}

// sleeping returns how many calls have told the log they reached the
// plugin and are sleeping.
func sleeping(logs *logBuffer) int {
	return strings.Count(logs.String(), `"msg":"testplugin sleeping"`)
}

func TestKillRestart(t *testing.T) {
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	p := startTest(t, Spec{Name: "kill", Config: []byte(`{"sleep": "1h"}`), Registerer: reg,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	old, oldSock := p.current().pid, p.current().sock
	if oldSock == "" {
		t.Fatal("no Unix socket recorded for the plugin")
	}

	// The call and the plugin's sleep last an hour: only the kill ends
	// the call within the test.
	done := make(chan error, 1)
	go func() {
		_, err := run(p, time.Hour, dataTx("sleep@example.org", nil))
		done <- err
	}()
	waitFor(t, waitLong, "the call to reach the plugin", func() bool { return sleeping(logs) == 1 })
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("in-flight Run of a killed plugin succeeded")
		}
	case <-time.After(waitLong):
		t.Fatalf("in-flight Run still waiting %v after its plugin was killed", waitLong)
	}

	var v stages.Verdict
	waitFor(t, waitLong, "Run to succeed after the restart", func() bool {
		var err error
		v, err = run(p, waitLong, dataTx("a@example.org", nil))
		return err == nil
	})
	if v.Reason == fmt.Sprintf("pid %d", old) {
		t.Errorf("answered by the killed process %d", old)
	}
	// The killed process could not remove its socket; the host did.
	if _, err := os.Stat(oldSock); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the killed plugin's socket %s is still there (%v)", oldSock, err)
	}
	err := testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP mailgate_plugin_restarts_total Times a stage's plugin process was started again after it exited or was replaced.
# TYPE mailgate_plugin_restarts_total counter
mailgate_plugin_restarts_total{stage="kill"} 1
`), "mailgate_plugin_restarts_total")
	if err != nil {
		t.Error(err)
	}
}

// TestCrashIsOneFailure: kill -9 of a plugin with more calls in flight
// than MaxFailures fails them all, and once the process is restarted
// calls go through again. Were each of them a failure, the circuit would
// stay open for its (here endless) cool-down.
func TestCrashIsOneFailure(t *testing.T) {
	const inFlight = 8
	logs := &logBuffer{}
	p := startTest(t, Spec{Name: "crash1", Config: []byte(`{"sleep": "1h"}`), MaxFailures: 3, Cooldown: time.Hour,
		Logger: slog.New(slog.NewJSONHandler(logs, nil))})
	old := p.current().pid
	errs := make(chan error, inFlight)
	for range inFlight {
		go func() {
			_, err := run(p, time.Hour, dataTx("sleep@example.org", nil))
			errs <- err
		}()
	}
	waitFor(t, waitLong, "every call to reach the plugin", func() bool { return sleeping(logs) == inFlight })
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range inFlight {
		if err := <-errs; err == nil {
			t.Fatal("a call to the killed plugin succeeded")
		}
	}
	// Calls made before the restart fail fast with ErrDown and do not
	// count either.
	for range inFlight {
		run(p, waitLong, dataTx("a@example.org", nil))
	}
	if st := p.State(); st.CircuitOpen {
		t.Errorf("circuit open after one crash: %+v", st)
	}
	var v stages.Verdict
	waitFor(t, waitLong, "the restarted plugin to answer", func() bool {
		var err error
		v, err = run(p, waitLong, dataTx("a@example.org", nil))
		if errors.Is(err, ErrCircuitOpen) {
			t.Fatalf("circuit open after one crash: %v", err)
		}
		return err == nil
	})
	if v.Reason == fmt.Sprintf("pid %d", old) {
		t.Errorf("answered by the killed process %d", old)
	}
	if st := p.State(); !st.Up || st.CircuitOpen || st.Failures != 0 {
		t.Errorf("after the restart: %+v, want up with no failures", st)
	}
}

// TestRestartClosesCircuit: a plugin whose circuit is open from failed
// calls and that then crashes is, once restarted, taking calls at once,
// not after the cool-down.
func TestRestartClosesCircuit(t *testing.T) {
	p := startTest(t, Spec{Name: "reopen", MaxFailures: 2, Cooldown: time.Hour})
	first := p.current().pid
	for range 2 {
		run(p, waitLong, dataTx("fail@example.org", nil))
	}
	if st := p.State(); !st.CircuitOpen {
		t.Fatalf("after 2 failures: %+v, want the circuit open", st)
	}
	// The open circuit asked for a fresh process; wait for it, then
	// crash it.
	var pid int
	waitFor(t, waitLong, "the replacement process", func() bool {
		if pr := p.current(); pr != nil {
			pid = pr.pid
		}
		return pid != 0 && pid != first
	})
	if _, err := run(p, waitLong, dataTx("a@example.org", nil)); !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("call with the circuit open: %v, want ErrCircuitOpen", err)
	}
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, waitLong, "the restarted plugin to answer", func() bool {
		_, err := run(p, waitLong, dataTx("a@example.org", nil))
		return err == nil
	})
}

func TestCrashRestart(t *testing.T) {
	p := startTest(t, Spec{Name: "crash"})
	if _, err := run(p, waitLong, dataTx("crash@example.org", nil)); err == nil {
		t.Fatal("Run that crashed the plugin succeeded")
	}
	// While the process is down, calls fail fast with ErrDown rather than
	// wait for the restart (unless it is already done).
	if _, err := run(p, waitLong, dataTx("a@example.org", nil)); err != nil && !errors.Is(err, ErrDown) {
		t.Errorf("a call to a down plugin: %v, want ErrDown", err)
	}
	waitFor(t, waitLong, "Run to succeed after the crash", func() bool {
		_, err := run(p, waitLong, dataTx("a@example.org", nil))
		return err == nil
	})
}

// TestDeadline: a call returns at its deadline, not when the plugin (which
// ignores it and sleeps for an hour) answers.
func TestDeadline(t *testing.T) {
	p := startTest(t, Spec{Config: []byte(`{"sleep": "1h"}`)})
	done := make(chan error, 1)
	go func() {
		_, err := run(p, 300*time.Millisecond, dataTx("sleep@example.org", nil))
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Run past its deadline: %v, want context.DeadlineExceeded", err)
		}
	case <-time.After(waitLong):
		t.Fatalf("Run with a 300ms deadline still running after %v", waitLong)
	}
}

func TestCircuit(t *testing.T) {
	// The cool-down must outlast a loaded machine's pause between the
	// third failure and the call that finds the circuit open.
	const cooldown = 2 * time.Second
	p := startTest(t, Spec{MaxFailures: 3, Cooldown: cooldown})
	var opened time.Time // no later than the circuit opened
	for i := range 3 {
		opened = time.Now()
		_, err := run(p, waitLong, dataTx("fail@example.org", nil))
		if err == nil || !strings.Contains(err.Error(), "scanner unreachable") {
			t.Fatalf("failing call %d: %v", i+1, err)
		}
	}
	_, err := run(p, waitLong, dataTx("a@example.org", nil))
	if !errors.Is(err, ErrCircuitOpen) {
		t.Fatalf("call after 3 failures: %v, want ErrCircuitOpen", err)
	}
	// After the cool-down a probe goes through (once the process, replaced
	// when the circuit opened, is back) and closes the circuit.
	waitFor(t, waitLong, "the circuit to close", func() bool {
		_, err := run(p, waitLong, dataTx("a@example.org", nil))
		return err == nil
	})
	if d := time.Since(opened); d < cooldown {
		t.Errorf("circuit closed after %v, before its cool-down", d)
	}
	if _, err := run(p, waitLong, dataTx("a@example.org", nil)); err != nil {
		t.Errorf("call after the circuit closed: %v", err)
	}
}

func TestPanicKeepsProcess(t *testing.T) {
	p := startTest(t, Spec{})
	pid := p.current().pid
	_, err := run(p, waitLong, dataTx("panic@example.org", nil))
	if err == nil || !strings.Contains(err.Error(), "filter panicked: testplugin told to panic") {
		t.Errorf("Run of a panicking filter: %v", err)
	}
	v, err := run(p, waitLong, dataTx("a@example.org", nil))
	if err != nil || v.Reason != fmt.Sprintf("pid %d", pid) {
		t.Errorf("after a panic: %+v, %v; want the same process %d", v, err, pid)
	}
}

func TestGarbage(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{`{"garbage": "action"}`, "plugin answered garbage: unknown action 43"},
		{`{"garbage": "edit"}`, `plugin answered garbage: edit 1: header_add: field "X-Ok"`},
	} {
		p := startTest(t, Spec{Config: []byte(tc.config)})
		_, err := run(p, waitLong, dataTx("a@example.org", nil))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.config, err, tc.want)
		}
	}
}

func TestClose(t *testing.T) {
	p := startTest(t, Spec{})
	pid := p.current().pid
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, 0); !errors.Is(err, syscall.ESRCH) {
		t.Errorf("plugin process %d after Close: kill(0) = %v, want ESRCH", pid, err)
	}
	if _, err := run(p, waitLong, dataTx("a@example.org", nil)); !errors.Is(err, ErrClosed) {
		t.Errorf("Run after Close: %v, want ErrClosed", err)
	}
}

// fileBody is a body in a file, as the spool keeps it. Open fails so that a
// test sees the host never reads the body itself.
type fileBody struct {
	path         string
	offset, size int64
}

func (b fileBody) Size() int64           { return b.size }
func (b fileBody) File() (string, int64) { return b.path, b.offset }
func (b fileBody) Open() (io.ReadCloser, error) {
	return nil, errors.New("the host must not read a file body")
}

func TestBodies(t *testing.T) {
	big := make([]byte, 1<<20+3)
	rand.Read(big)
	header := []byte("Subject: hello\r\n\r\n")
	path := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(path, append(header, big...), 0o600); err != nil {
		t.Fatal(err)
	}
	small := []byte("short\r\n")

	p := startTest(t, Spec{})
	for _, tc := range []struct {
		name string
		body stages.Body
		want []byte
	}{
		{"inline", stages.BytesBody(small), small},
		{"file", fileBody{path, int64(len(header)), int64(len(big))}, big},
		{"streamed", stages.BytesBody(big), big},
		{"empty", stages.BytesBody(nil), nil},
	} {
		v, err := run(p, waitLong, dataTx("a@example.org", tc.body))
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
		} else if v.Result != digest(tc.want) {
			t.Errorf("%s: plugin read %q, want %q", tc.name, v.Result, digest(tc.want))
		}
	}
}
