package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// pluginCopy copies the test plugin to a file of its own, so that the
// processes running it are this test's alone.
func pluginCopy(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(testPluginBin)
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(bin, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return bin
}

// header returns the value of the first field name in the header of data.
func header(data []byte, name string) string {
	for _, line := range strings.Split(string(data), "\r\n") {
		if line == "" {
			break
		}
		if v, ok := strings.CutPrefix(line, name+": "); ok {
			return v
		}
	}
	return ""
}

// delivered waits for the message with Message-ID id and returns it.
func delivered(t *testing.T, down *smtptest.Server, id string) smtptest.Message {
	t.Helper()
	deadline := time.Now().Add(waitLong)
	for {
		for _, m := range down.Messages() {
			if messageID(m.Data) == id {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never arrived", id)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReload: a broken config, one that needs a restart and one whose
// plugin refuses its config are each refused with the reason and change
// nothing; a good one changes what new sessions get, while a session open
// across the reload goes on under the config it started with. Only the
// plugin whose config changed is restarted, and its old process stops
// when the last session using it ends.
func TestReload(t *testing.T) {
	down := smtptest.NewServer(t)
	marker, steady := pluginCopy(t, "marker"), pluginCopy(t, "steady")
	body := func(gen string) string {
		return routeTo(down, "dest.test") +
			pluginStage("marker", marker, "", "", fmt.Sprintf(`add_header = "X-Gen: %s"`, gen)) +
			pluginStage("steady", steady, "", "", `add_header = "X-Steady: yes"`)
	}
	fg := startFromFile(t, body("one"))
	steadyPIDs, oldMarker := pluginPIDs(t, steady), pluginPIDs(t, marker)
	if len(steadyPIDs) != 1 || len(oldMarker) != 1 {
		t.Fatalf("plugin processes: steady %v, marker %v", steadyPIDs, oldMarker)
	}
	old := dial(t, fg.SMTPAddrs()[0])
	old.Cmd("EHLO old.client.test", "250")
	queuedAs(t, old.SendMail("a@sender.test", []string{"b@dest.test"}, message("before@test", "x\r\n")))

	for _, bad := range []struct {
		name, config, want string
	}{
		{"unknown key", body("two") + "\n[policy]\ntag_scor = 1.0\n", "tag_scor"},
		{"plugin refuses its config", body("two") + pluginStage("bad", testPluginBin, "", "", `garbage = "nope"`), "garbage"},
		// A result word the plugin does not declare would never apply.
		{"result word typo", body("two") + pluginStage("words", testPluginBin, "", "", `results = ["clean", "listed"]`) +
			"[stage.results]\nlsited = \"reject\"\n", "stage[2].results.lsited: unknown result of kind testplugin; did you mean listed?"},
		{"override result word typo", body("two") + pluginStage("words", testPluginBin, "", "", `results = ["clean", "listed"]`) +
			"\n[[policy.override]]\nrcpts = [\"b@dest.test\"]\nresults.words.lsited = \"reject\"\n",
			"policy.override[0].results.words.lsited: unknown result of kind testplugin; did you mean listed?"},
		{"pool size change", strings.Replace(body("two"), "[delivery]", "[delivery]\nmax_connections = 7", 1), "restart needed"},
	} {
		fg.write(bad.config)
		out, ok := fg.mailgate("reload")
		if ok || !strings.Contains(out, bad.want) {
			t.Errorf("reload with %s (ok=%v), want an error naming %q:\n%s", bad.name, ok, bad.want, out)
		}
	}
	// Still serving, with the old config, on the open session.
	queuedAs(t, old.SendMail("a@sender.test", []string{"b@dest.test"}, message("refused@test", "x\r\n")))
	if g := header(delivered(t, down, "refused@test").Data, "X-Gen"); g != "one" {
		t.Fatalf("after refused reloads X-Gen = %q, want one", g)
	}

	fg.write(body("two"))
	if out := fg.must("reload"); out != "reloaded\n" {
		t.Fatalf("reload said %q", out)
	}
	queuedAs(t, old.SendMail("a@sender.test", []string{"b@dest.test"}, message("old-session@test", "x\r\n")))
	fresh := dial(t, fg.SMTPAddrs()[0])
	fresh.Cmd("EHLO new.client.test", "250")
	queuedAs(t, fresh.SendMail("a@sender.test", []string{"b@dest.test"}, message("new-session@test", "x\r\n")))
	if g := header(delivered(t, down, "old-session@test").Data, "X-Gen"); g != "one" {
		t.Errorf("session open across the reload: X-Gen = %q, want one (its own config)", g)
	}
	m := delivered(t, down, "new-session@test")
	if g := header(m.Data, "X-Gen"); g != "two" {
		t.Errorf("session after the reload: X-Gen = %q, want two", g)
	}
	if g := header(m.Data, "X-Steady"); g != "yes" {
		t.Errorf("unchanged stage missing after the reload: X-Steady = %q", g)
	}
	if now := pluginPIDs(t, steady); !slices.Equal(now, steadyPIDs) {
		t.Errorf("unchanged stage restarted: %v, then %v", steadyPIDs, now)
	}
	if now := pluginPIDs(t, marker); len(now) != 2 {
		t.Errorf("changed stage while the old session lives: processes %v, want the old and the new", now)
	}
	old.Cmd("QUIT", "221")
	deadline := time.Now().Add(waitLong)
	for {
		now := pluginPIDs(t, marker)
		if len(now) == 1 && now[0] != oldMarker[0] {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("old plugin process not stopped after its last session: %v (old %v)", now, oldMarker)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestSIGHUPReloads: `mailgate serve` re-reads its config on SIGHUP.
func TestSIGHUPReloads(t *testing.T) {
	first, second := smtptest.NewServer(t), smtptest.NewServer(t)
	data := tempDir(t)
	conf := writeConfig(t, data, first)
	p := startProcess(t, conf)
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), first.Addr(), second.Addr(), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(waitLong)
	for {
		p.mu.Lock()
		done := strings.Contains(p.log.String(), "msg=reloaded")
		p.mu.Unlock()
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no reload logged after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !sendOne(p.addr, "after-hup@test") {
		t.Fatal("message refused after SIGHUP")
	}
	delivered(t, second, "after-hup@test")
	if n := len(first.Messages()); n != 0 {
		t.Fatalf("the old route got %d messages", n)
	}
}

// TestPerDomainPolicy: the same message, scored the same by the same
// stage, is tagged for example.test and refused for strict.test, whose
// override has reject_score = 5; one transaction never mixes the two
// (452 4.5.3, the sender splits it).
func TestPerDomainPolicy(t *testing.T) {
	down := smtptest.NewServer(t)
	// The test plugin scores 6 in each of the five phases, 30 in all; by
	// RCPT a message has 24.
	conf := routeTo(down, "example.test", "strict.test") + `
[policy]
tag_score = 5.0
quarantine_score = 100.0
reject_score = 100.0
subject_tag = "[SPAM]"

[[policy.override]]
name = "strict"
domains = ["strict.test"]
tag_score = 5.0
quarantine_score = 5.0
reject_score = 5.0
` + pluginStage("spam", testPluginBin, "", "", "score = 6")
	fg := startFromFile(t, conf)
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<x@example.test>", "250")
	c.Cmd("RCPT TO:<y@strict.test>", "452 4.5.3")
	c.Cmd("DATA", "354")
	c.Send(message("scored@test", "x\r\n") + ".\r\n")
	c.Expect("250")
	m := delivered(t, down, "scored@test")
	if len(m.Rcpts) != 1 || m.Rcpts[0] != "x@example.test" {
		t.Fatalf("delivered to %q, want only x@example.test", m.Rcpts)
	}
	if s := header(m.Data, "Subject"); s != "[SPAM] test" {
		t.Fatalf("example.test got Subject %q, want it tagged", s)
	}

	// The split-off recipient, sent again on its own, gets its own policy.
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<y@strict.test>", "550 5.7.1")
	c.Cmd("RSET", "250")
	waitQueueEmpty(t, fg.Gateway)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d messages delivered, want 1", n)
	}
}
