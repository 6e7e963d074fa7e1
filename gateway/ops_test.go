package gateway_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// fileGateway is a gateway run in-process from a config file, as `mailgate
// serve -config FILE` runs it, so that it can be reloaded and operated
// with the mailgate commands.
type fileGateway struct {
	*gateway.Gateway
	t    *testing.T
	dir  string // data dir
	file string // what the gateway reads, on start and on reload
	// cli is the same config with the admin listener's real address, for
	// the mailgate commands to find it.
	cli string
}

// gatewayConfig is a whole config around body, which must not have the
// [server] or [admin] tables.
func gatewayConfig(dir, admin, body string) string {
	return fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = %q\n%s", dir, admin, body)
}

func startFromFile(t *testing.T, body string) *fileGateway {
	t.Helper()
	tmp := t.TempDir()
	fg := &fileGateway{t: t, dir: filepath.Join(tmp, "data"), file: filepath.Join(tmp, "mailgate.toml"), cli: filepath.Join(tmp, "cli.toml")}
	fg.write(body)
	cfg, err := policy.Load(fg.file)
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{
		Logger:        testLogger(t),
		LoadConfig:    func() (*policy.Config, error) { return policy.Load(fg.file) },
		PluginCommand: func(kind string) []string { return []string{mailgateBin, "plugin", kind} },
	})
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
	fg.Gateway = g
	if err := os.WriteFile(fg.cli, []byte(gatewayConfig(fg.dir, g.AdminAddr().String(), body)), 0o644); err != nil {
		t.Fatal(err)
	}
	return fg
}

// write replaces the config file the gateway reads with body.
func (fg *fileGateway) write(body string) {
	fg.t.Helper()
	if err := os.WriteFile(fg.file, []byte(gatewayConfig(fg.dir, "127.0.0.1:0", body)), 0o644); err != nil {
		fg.t.Fatal(err)
	}
}

// mailgate runs a mailgate command against the gateway and returns its
// output and whether it exited 0.
func (fg *fileGateway) mailgate(args ...string) (string, bool) {
	fg.t.Helper()
	// The command's own flags come after its subcommand.
	n := 1
	if args[0] == "queue" || args[0] == "quarantine" {
		n = 2
	}
	full := append(append(append([]string{}, args[:n]...), "-config", fg.cli), args[n:]...)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, mailgateBin, full...).CombinedOutput()
	if err != nil {
		if _, ok := err.(*exec.ExitError); !ok {
			fg.t.Fatalf("mailgate %v: %v", full, err)
		}
	}
	return string(out), err == nil
}

func (fg *fileGateway) must(args ...string) string {
	fg.t.Helper()
	out, ok := fg.mailgate(args...)
	if !ok {
		fg.t.Fatalf("mailgate %v failed:\n%s", args, out)
	}
	return out
}

func queuedAs(t *testing.T, reply string) string {
	t.Helper()
	id, ok := strings.CutPrefix(reply, "250 2.0.0 Ok: queued as ")
	if !ok {
		t.Fatalf("reply %q, want 250 with a queue ID", reply)
	}
	return id
}

// TestQuarantineListShowReleaseOnce: a quarantined message is not
// delivered; it is listed (and filtered), shown with every verdict,
// released once — a second release says it was — and delivered once.
func TestQuarantineListShowReleaseOnce(t *testing.T) {
	down := smtptest.NewServer(t)
	fg := startFromFile(t, routeTo(down, "dest.test")+pluginStage("holdall", testPluginBin, "", "", `action = "quarantine"`))
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message("held@test", "suspicious\r\n")))

	list := fg.must("quarantine", "list")
	if !strings.Contains(list, id) || !strings.Contains(list, "<a@sender.test>") || !strings.Contains(list, "holdall") {
		t.Fatalf("quarantine list lacks %s:\n%s", id, list)
	}
	for _, f := range []struct {
		args []string
		want bool
	}{
		{[]string{"-from", "A@SENDER"}, true},
		{[]string{"-from", "other@"}, false},
		{[]string{"-to", "b@dest.test"}, true},
		{[]string{"-stage", "holdall"}, true},
		{[]string{"-stage", "nosuch"}, false},
		{[]string{"-newer", "1h"}, true},
		{[]string{"-older", "1h"}, false},
	} {
		out := fg.must(append([]string{"quarantine", "list"}, f.args...)...)
		if strings.Contains(out, id) != f.want {
			t.Errorf("quarantine list %v: listed=%v, want %v:\n%s", f.args, !f.want, f.want, out)
		}
	}
	show := fg.must("quarantine", "show", id)
	for _, want := range []string{"from:", "<a@sender.test>", "<b@dest.test>", "stage:", "holdall", "reason:", "verdicts:"} {
		if !strings.Contains(show, want) {
			t.Errorf("quarantine show lacks %q:\n%s", want, show)
		}
	}
	// Every phase's verdict is kept.
	for _, ph := range []string{"connect", "helo", "mail", "rcpt", "data"} {
		if !regexp.MustCompile(`holdall\s+testplugin\s+` + ph + `\s+quarantine`).MatchString(show) {
			t.Errorf("quarantine show lacks the %s verdict:\n%s", ph, show)
		}
	}
	if msg := fg.must("quarantine", "show", "-message", id); !strings.Contains(msg, "Message-ID: <held@test>") || !strings.Contains(msg, "suspicious") {
		t.Errorf("quarantine show -message:\n%s", msg)
	}
	// A quarantined message never enters the queue: with the queue empty
	// after its 250, nothing can reach the server before the release.
	if q := queue(t, fg.Gateway); len(q) != 0 {
		t.Fatalf("%d messages queued besides the quarantine", len(q))
	}
	if n := len(down.Messages()); n != 0 {
		t.Fatalf("%d messages delivered before the release", n)
	}

	out := fg.must("quarantine", "release", id)
	m := regexp.MustCompile(`released, queued as (\S+)`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("release said:\n%s", out)
	}
	msgs := down.WaitFor(1, waitLong)
	if messageID(msgs[0].Data) != "held@test" || len(msgs[0].Rcpts) != 1 || msgs[0].Rcpts[0] != "b@dest.test" {
		t.Fatalf("released message went wrong: %q to %q", messageID(msgs[0].Data), msgs[0].Rcpts)
	}
	again, ok := fg.mailgate("quarantine", "release", id)
	if ok || !strings.Contains(again, "already released as "+m[1]) {
		t.Fatalf("second release (exit ok=%v):\n%s", ok, again)
	}
	if list := fg.must("quarantine", "list"); !strings.Contains(list, m[1]) {
		t.Errorf("list does not show the release:\n%s", list)
	}
	waitQueueEmpty(t, fg.Gateway)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d deliveries, want exactly 1", n)
	}
	// The trace tells the whole story from either ID.
	tr := fg.must("trace", id)
	for _, want := range []string{"quarantine", "released", "queued", "attempt", "action=relayed", m[1]} {
		if !strings.Contains(tr, want) {
			t.Errorf("trace lacks %q:\n%s", want, tr)
		}
	}
	fg.must("quarantine", "delete", id)
	if out, ok := fg.mailgate("quarantine", "show", id); ok || !strings.Contains(out, "no such message") {
		t.Fatalf("show after delete (ok=%v):\n%s", ok, out)
	}
}

// TestTraceOfRejectedMessage: a message refused at DATA has a trace with
// the connection, every stage of every phase with its verdict and latency,
// the decision and the reply; found by Message-ID and by queue ID.
func TestTraceOfRejectedMessage(t *testing.T) {
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + "\n[policy]\ntag_score = 50.0\nquarantine_score = 60.0\nreject_score = 70.0\n" +
		pluginStage("scorer", testPluginBin, "", "", "score = 1") +
		pluginStage("exeblock", exeblockBin, "", "", `reply = "Executables are not accepted here"`)
	fg := startFromFile(t, conf)
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, withAttachment("rejected@test", "x.pdf", "application/pdf", fakePE())); r != "550 5.7.1 Executables are not accepted here" {
		t.Fatalf("reply %q", r)
	}

	// The sender's bounce names the Message-ID; the operator's log names
	// the queue ID. Either finds it.
	js := fg.must("trace", "-json", "<rejected@test>")
	var first struct {
		QueueID string `json:"queue_id"`
	}
	if err := json.NewDecoder(strings.NewReader(js)).Decode(&first); err != nil || first.QueueID == "" {
		t.Fatalf("trace -json: %v\n%s", err, js)
	}
	tr := fg.must("trace", first.QueueID)
	for _, want := range []string{
		"connect   client=127.0.0.1 helo=client.test",
		"mail      from=<a@sender.test>",
		"rcpt      to=<b@dest.test>",
		"data      message_id=<rejected@test>",
		"action=reject score=5 stage=exeblock",
		`reply="550 5.7.1 Executables are not accepted here"`,
		"stage exeblock (exeblock) data: reject",
	} {
		if !strings.Contains(tr, want) {
			t.Errorf("trace lacks %q:\n%s", want, tr)
		}
	}
	for _, ph := range []string{"connect", "helo", "mail", "rcpt", "data"} {
		if !regexp.MustCompile(`stage scorer \(testplugin\) ` + ph + `: continue score=1 \d+\.\dms`).MatchString(tr) {
			t.Errorf("trace lacks the scorer's %s verdict with its latency:\n%s", ph, tr)
		}
	}
	if out, ok := fg.mailgate("trace", "0000000000000000"); ok || !strings.Contains(out, "no trace of") {
		t.Errorf("trace of an unknown ID (ok=%v): %s", ok, out)
	}
}

// scrape returns the samples of /metrics, keyed name{label="value",...}
// with the labels sorted, as Prometheus' text format writes them.
func scrape(t *testing.T, g *gateway.Gateway) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + g.AdminAddr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	out := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

// TestMetricsCountWhatWasSent: the counters on /metrics match what the
// test did: sessions, replies by code, stage verdicts and latencies,
// policy actions, delivery outcomes, the queue by destination.
func TestMetricsCountWhatWasSent(t *testing.T) {
	down := smtptest.NewServer(t)
	stuck := smtptest.NewServer(t)
	stuck.Stop()
	conf := routeTo(down, "dest.test") + fmt.Sprintf("\n[[route]]\ndomains = [\"stuck.test\"]\nservers = [%q]\n", stuck.Addr()) +
		pluginStage("scorer", testPluginBin, "", "", "")
	fg := startFromFile(t, conf)
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	for i := range 2 {
		queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("m%d@test", i), "x\r\n")))
	}
	queuedAs(t, c.SendMail("a@sender.test", []string{"c@stuck.test"}, message("stuck@test", "x\r\n")))
	if r := c.TrySend("a@sender.test", []string{"x@elsewhere.test"}, message("denied@test", "x\r\n")); !strings.HasPrefix(r, "554") {
		t.Fatal(r)
	}
	down.WaitFor(2, waitLong)

	want := map[string]float64{
		`mailgate_smtp_sessions_total`:                     1,
		`mailgate_smtp_replies_total{code="250"}`:          10, // 4 MAIL, 3 RCPT, 3 DATA
		`mailgate_smtp_replies_total{code="554"}`:          1,
		`mailgate_policy_actions_total{action="continue"}`: 3,
		// connect, helo, 4 mail, 3 rcpt, 3 data
		`mailgate_stage_verdicts_total{action="continue",kind="testplugin",stage="scorer"}`:    12,
		`mailgate_stage_duration_seconds_count{kind="testplugin",phase="data",stage="scorer"}`: 3,
		`mailgate_plugin_restarts_total{stage="scorer"}`:                                       0,
		`mailgate_queue_messages{destination="stuck.test"}`:                                    1,
	}
	deadline := time.Now().Add(waitLong)
	for {
		got := scrape(t, fg.Gateway)
		var bad []string
		for k, v := range want {
			if g, ok := got[k]; !ok || g != v {
				bad = append(bad, fmt.Sprintf("%s = %v (present %v), want %v", k, g, ok, v))
			}
		}
		if got[`mailgate_delivery_outcomes_total{outcome="relayed"}`] != 2 {
			bad = append(bad, fmt.Sprintf("relayed = %v, want 2", got[`mailgate_delivery_outcomes_total{outcome="relayed"}`]))
		}
		if got[`mailgate_delivery_outcomes_total{outcome="deferred"}`] < 1 {
			bad = append(bad, "no deferred outcome for stuck.test")
		}
		if got[`mailgate_queue_oldest_age_seconds{destination="stuck.test"}`] <= 0 {
			bad = append(bad, "no age for the stuck.test queue")
		}
		if len(bad) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("metrics:\n%s", strings.Join(bad, "\n"))
		}
		time.Sleep(100 * time.Millisecond)
	}

	// The queue commands see the stuck message, once the delivered ones
	// are gone, and act on it.
	var list string
	for end := time.Now().Add(waitLong); ; {
		list = fg.must("queue", "list")
		if strings.Count(list, "\n") == 2 || time.Now().After(end) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(list, "<a@sender.test>") || strings.Count(list, "\n") != 2 {
		t.Fatalf("queue list:\n%s", list)
	}
	id := strings.Fields(strings.Split(list, "\n")[1])[0]
	if show := fg.must("queue", "show", id); !strings.Contains(show, "<c@stuck.test> pending") {
		t.Fatalf("queue show:\n%s", show)
	}
	fg.must("queue", "hold", id)
	if list := fg.must("queue", "list"); !strings.Contains(list, "held") {
		t.Fatalf("queue list after hold:\n%s", list)
	}
	stuck.Restart()
	fg.must("queue", "release", id)
	stuck.WaitFor(1, waitLong)
	if out, ok := fg.mailgate("queue", "retry", id); ok || !strings.Contains(out, "no such message") {
		t.Fatalf("retry of a delivered message (ok=%v): %s", ok, out)
	}
}

// TestHealthz: 200 while the spool takes writes, 503 saying why when it
// does not.
func TestHealthz(t *testing.T) {
	var full atomic.Bool
	cfg, err := policy.Parse("test.toml", []byte(gatewayConfig(t.TempDir(), "127.0.0.1:0", "")))
	if err != nil {
		t.Fatal(err)
	}
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Logger: testLogger(t), Spool: spool.Options{FailWrites: failWhen(&full, syscall.ENOSPC)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	get := func() (int, string) {
		resp, err := http.Get("http://" + g.AdminAddr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || !strings.HasPrefix(body, "ok\n") {
		t.Fatalf("healthy: %d %q", code, body)
	}
	full.Store(true)
	if code, body := get(); code != 503 || !strings.HasPrefix(body, "unhealthy: spool: not writable") || !strings.Contains(body, "no space left") {
		t.Fatalf("full disk: %d %q", code, body)
	}
	full.Store(false)
	if code, _ := get(); code != 200 {
		t.Fatalf("after the disk has room again: %d", code)
	}
}

// TestHealthzNearlyFullDisk: a spool with a few blocks left takes
// /healthz's small probe but answers every real message with 452; health
// says 503, and why, as long as the spool has no room for a message of
// max_message_size.
func TestHealthzNearlyFullDisk(t *testing.T) {
	down := smtptest.NewServer(t)
	var free atomic.Int64
	free.Store(1 << 40)
	var full atomic.Bool // the disk refuses any write bigger than the probe
	g := startGatewayOpts(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_message_size = \"10MB\"\n"+routeTo(down, "dest.test"), gateway.Options{
		Logger: testLogger(t),
		Spool: spool.Options{
			FreeSpace:  func() (int64, error) { return free.Load(), nil },
			FailWrites: failWhen(&full, syscall.ENOSPC),
		},
	})
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + g.AdminAddr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != 200 || !strings.Contains(body, "\nspool: ok: writable, 1.1TB free\n") ||
		!strings.Contains(body, "\ndelivery: ok: running\n") || !strings.Contains(body, "\nquarantine: ok: writable\n") {
		t.Fatalf("healthy: %d %q", code, body)
	}
	// 16 KB left: DATA fails, the probe would not.
	free.Store(16 << 10)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	full.Store(true)
	if r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message("big@test", strings.Repeat("x", 70)+"\r\n")); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("DATA on a full disk: %q", r)
	}
	full.Store(false)
	code, body := get()
	if code != 503 || !strings.HasPrefix(body, "unhealthy: spool: 16.4KB free, less than max_message_size 10MB\n") {
		t.Fatalf("nearly full disk: %d %q", code, body)
	}
	free.Store(20e6)
	if code, body := get(); code != 200 {
		t.Fatalf("with room again: %d %q", code, body)
	}
}

// TestHealthzStages: /healthz names each stage's plugin with its process,
// and a stage whose plugin is down makes it 503 when its on_error
// (tempfail) stops mail, not when mail goes on without it (skip).
func TestHealthzStages(t *testing.T) {
	down := smtptest.NewServer(t)
	stop := filepath.Join(t.TempDir(), "testplugin-stop")
	skip := filepath.Join(t.TempDir(), "testplugin-skip")
	for _, bin := range []string{stop, skip} {
		b, err := os.ReadFile(testPluginBin)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(bin, b, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	g := startGateway(t, routeTo(down, "dest.test")+pluginStage("stopper", stop, "", "tempfail", "")+pluginStage("skipper", skip, "", "skip", ""))
	url := "http://" + g.AdminAddr().String() + "/healthz"
	get := func() (int, string) {
		t.Helper()
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	code, body := get()
	for _, bin := range []string{stop, skip} {
		pids := pluginPIDs(t, bin)
		if len(pids) != 1 || !strings.Contains(body, fmt.Sprintf(": ok: up, pid %d\n", pids[0])) {
			t.Fatalf("%s (pids %v) not reported up: %d %q", bin, pids, code, body)
		}
	}
	if code != 200 {
		t.Fatalf("all up: %d %q", code, body)
	}
	// Without its executable a plugin cannot come back.
	for _, bin := range []string{stop, skip} {
		os.Remove(bin)
		for _, pid := range pluginPIDs(t, bin+" (deleted)") {
			syscallKill(pid)
		}
	}
	waitUntil(t, 30*time.Second, "/healthz to report both plugins down", func() bool {
		code, body = get()
		return strings.Contains(body, "\nstage stopper: down: not running, restarting; on_error tempfail\n") &&
			strings.Contains(body, "\nstage skipper: degraded: not running, restarting; on_error skip\n")
	})
	if code != 503 || !strings.HasPrefix(body, "unhealthy: stage stopper: not running, restarting; on_error tempfail\n") {
		t.Fatalf("a tempfail stage down: %d %q", code, body)
	}
}

// TestAdminAPIRebinding: a page whose name rebinds to the admin
// listener's address (DNS rebinding) sends its own name as Host; it
// reads nothing and releases nothing, on any path. The listener's own
// names work, and so does the CLI.
func TestAdminAPIRebinding(t *testing.T) {
	down := smtptest.NewServer(t)
	fg := startFromFile(t, routeTo(down, "dest.test")+pluginStage("holdall", testPluginBin, "", "", `action = "quarantine"`))
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message("held@test", "secret\r\n")))
	admin := fg.AdminAddr().String()
	_, port, _ := strings.Cut(admin, ":")
	call := func(method, path, host string) (int, string) {
		t.Helper()
		req, err := http.NewRequest(method, "http://"+admin+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = host
		req.Header.Set("Mailgate-Admin", "1") // a page gets it past CORS on its own origin
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, host := range []string{"rebind.evil.example", "rebind.evil.example:" + port} {
		for _, path := range []string{"/api/queue", "/api/quarantine", "/api/quarantine/" + id, "/api/quarantine/" + id + "/message", "/healthz", "/metrics"} {
			if code, body := call("GET", path, host); code != http.StatusMisdirectedRequest || strings.Contains(body, id) || strings.Contains(body, "secret") {
				t.Errorf("GET %s with Host %s: %d %q, want 421 and nothing of the message", path, host, code, body)
			}
		}
		for _, path := range []string{"/api/quarantine/" + id + "/release", "/api/reload"} {
			if code, body := call("POST", path, host); code != http.StatusMisdirectedRequest {
				t.Errorf("POST %s with Host %s: %d %q, want 421", path, host, code, body)
			}
		}
	}
	for _, host := range []string{admin, "localhost:" + port, "[::1]:" + port} {
		if code, body := call("GET", "/api/quarantine/"+id, host); code != 200 || !strings.Contains(body, id) {
			t.Errorf("GET with Host %s: %d %q, want 200", host, code, body)
		}
	}
	// Not released by the misdirected POSTs: the CLI releases it now, once.
	if out := fg.must("quarantine", "release", id); !strings.Contains(out, "released, queued as") {
		t.Fatalf("release after the misdirected ones: %s", out)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "held@test" {
		t.Fatalf("delivered %s", messageID(msgs[0].Data))
	}
}

// TestAdminAPIGuard: a request that changes something needs the header a
// browser cannot send cross-origin unasked.
func TestAdminAPIGuard(t *testing.T) {
	fg := startFromFile(t, "")
	resp, err := http.Post("http://"+fg.AdminAddr().String()+"/api/reload", "application/x-www-form-urlencoded", bytes.NewReader(nil))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Fatalf("POST without the header: %d", resp.StatusCode)
	}
	resp, err = http.Get("http://" + fg.AdminAddr().String() + "/api/queue")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "[]" {
		t.Fatalf("GET /api/queue: %d %s", resp.StatusCode, b)
	}
}
