package main

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/spool"
)

// mailgateBin is this command, built once: the tests run it as a user
// does, and it serves the built-in kinds to itself as plugins.
// testPluginBin is plugins/host's test plugin, a third-party plugin.
var mailgateBin, testPluginBin string

// What TestMain builds mailgateBin as.
const testRevision, testBuildDate = "0123456789abcdef0123456789abcdef01234567", "2026-01-02T03:04:05Z"

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailgate-cmd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mailgateBin = filepath.Join(dir, "mailgate")
	testPluginBin = filepath.Join(dir, "testplugin")
	for bin, pkg := range map[string]string{mailgateBin: ".", testPluginBin: "../../plugins/internal/testplugin"} {
		// As the Makefile builds it: the revision and date by -ldflags.
		build := exec.Command("go", "build", "-ldflags", "-X main.revision="+testRevision+" -X main.buildDate="+testBuildDate, "-o", bin, pkg)
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

// result is how a run of the binary ended.
type result struct {
	code           int
	stdout, stderr string
}

// runMailgate runs the binary with args and waits for it to exit, which
// a command that should fail at start does at once; the deadline only
// keeps a hang (a serve that started after all) from stalling the tests.
func runMailgate(t *testing.T, args ...string) result {
	t.Helper()
	cmd := exec.Command(mailgateBin, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("mailgate %s did not exit\nstderr:\n%s", strings.Join(args, " "), stderr.String())
	}
	r := result{stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatal(err)
	}
	return r
}

// writeConfig writes a config with a data dir of its own, listening on a
// free port, without an admin listener, followed by body.
func writeConfig(t *testing.T, body string) string {
	t.Helper()
	dir := t.TempDir()
	conf := fmt.Sprintf(`hostname = "mx.example.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = ""
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:1"]
`, filepath.Join(dir, "data")) + body
	file := filepath.Join(dir, "mailgate.toml")
	if err := os.WriteFile(file, []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
	return file
}

// TestServeRefusesWhatCheckRefuses: a stage whose kind refuses its config
// stops `mailgate serve` with exit status 1 and the very error `mailgate
// check` prints, with file, line and key; it used to panic (a nil
// dereference while undoing the start).
func TestServeRefusesWhatCheckRefuses(t *testing.T) {
	file := writeConfig(t, `
[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "dnsbl"
kind = "dnsbl"
[stage.config]
lists = ["zen.spamhaus.org"]
`)
	check := runMailgate(t, "check", "-config", file)
	want := file + ":19: stage[1].config.lists: unknown key"
	if check.code != 1 || !strings.Contains(check.stderr, want) {
		t.Fatalf("check: exit %d, stderr:\n%s\nwant exit 1 and %q", check.code, check.stderr, want)
	}
	serve := runMailgate(t, "serve", "-config", file)
	if serve.code != 1 || !strings.Contains(serve.stderr, want) {
		t.Fatalf("serve: exit %d, stderr:\n%s\nwant exit 1 and %q", serve.code, serve.stderr, want)
	}
	if strings.Contains(serve.stderr, "panic") || strings.Contains(serve.stderr, "goroutine") {
		t.Fatalf("serve panicked:\n%s", serve.stderr)
	}
}

// TestServeStartFails: each way serve can fail to start, other than the
// config, ends with exit status 1 and what failed, never a panic, and
// leaves no plugin process running.
func TestServeStartFails(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	for _, tc := range []struct {
		name, server, admin, want string
		prepare                   func(t *testing.T, data string)
	}{
		{name: "spool held by another process", want: "open spool", prepare: func(t *testing.T, data string) {
			sp, err := spool.Open(filepath.Join(data, "queue"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sp.Close() })
		}},
		{name: "quarantine not a directory", want: "open quarantine", prepare: func(t *testing.T, data string) {
			os.MkdirAll(data, 0o700)
			os.WriteFile(filepath.Join(data, "quarantine"), nil, 0o600)
		}},
		{name: "trace not a directory", want: "open trace", prepare: func(t *testing.T, data string) {
			os.MkdirAll(data, 0o700)
			os.WriteFile(filepath.Join(data, "trace"), nil, 0o600)
		}},
		{name: "smtp listen", server: busy.Addr().String(), want: "listen " + busy.Addr().String() + ": "},
		{name: "admin listen", admin: busy.Addr().String(), want: "admin listen " + busy.Addr().String() + ": "},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			data := filepath.Join(dir, "data")
			server := tc.server
			if server == "" {
				server = "127.0.0.1:0"
			}
			file := filepath.Join(dir, "mailgate.toml")
			os.WriteFile(file, []byte(fmt.Sprintf(`hostname = "mx.example.test"
data_dir = %q
[server]
listen = [%q]
[admin]
listen = %q
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:1"]
[[stage]]
name = "spf"
kind = "spf"
`, data, server, tc.admin)), 0o644)
			if tc.prepare != nil {
				tc.prepare(t, data)
			}
			r := runMailgate(t, "serve", "-config", file)
			if r.code != 1 || !strings.Contains(r.stderr, tc.want) || strings.Contains(r.stderr, "panic") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", r.code, r.stderr, tc.want)
			}
			if pids := plugins(t); len(pids) > 0 {
				t.Fatalf("plugin processes left running: %v", pids)
			}
		})
	}
}

// plugins returns the processes of `mailgate plugin` still running; the
// binary is shared by the tests of this package, which do not run in
// parallel.
func plugins(t *testing.T) []string {
	t.Helper()
	entries, _ := os.ReadDir("/proc")
	var pids []string
	for _, e := range entries {
		if exe, err := os.Readlink(filepath.Join("/proc", e.Name(), "exe")); err == nil && exe == mailgateBin {
			pids = append(pids, e.Name())
		}
	}
	return pids
}

// TestCheckReportsEveryError: one run of check reports every mistake of
// the file, in line order: the loader's (a size without its unit, an
// unknown key), the kinds' (an unknown kind, result words the built-in
// kinds do not report), each stage's [stage.config] as its kind refuses
// it, and a result word a third-party plugin does not declare. It used to
// stop at the first class of errors, and the first stage that failed.
func TestCheckReportsEveryError(t *testing.T) {
	file := writeConfig(t, fmt.Sprintf(`
[delivery]
max_conections = 5

[[stage]]
name = "spf"
kind = "spf"
[stage.results]
fial = "reject"

[[stage]]
name = "dnsbl"
kind = "dnsbl"
[stage.config]
lists = ["zen.spamhaus.org"]

[[stage]]
name = "spam"
kind = "spam"
[stage.config]
spam_score = "high"

[[stage]]
name = "dkim"
kind = "milterr"

[[stage]]
name = "words"
kind = "plugin"
path = %q
[stage.config]
results = ["clean", "listed"]
[stage.results]
lisetd = "quarantine"

[[policy.override]]
rcpts = ["legal@example.test"]
results.spf.sofail = "reject"
`, testPluginBin))
	// A size without a unit, in the [server] the config starts with.
	b, _ := os.ReadFile(file)
	os.WriteFile(file, []byte(strings.Replace(string(b), "[server]\n", "[server]\nmax_message_size = 50\n", 1)), 0o644)

	r := runMailgate(t, "check", "-config", file)
	want := strings.Join([]string{
		file + `:4: server.max_message_size: unexpected 50; expect a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`,
		file + `:13: delivery.max_conections: unknown key; did you mean max_connections?`,
		file + `:19: stage[0].results.fial: unknown result of kind spf; did you mean fail?`,
		file + `:25: stage[1].config.lists: unknown key`,
		file + `:31: stage[2].config.spam_score: unexpected string; expect a number`,
		file + `:35: stage[3].kind: unexpected "milterr"; did you mean milter?`,
		file + `:44: stage[4].results.lisetd: unknown result of kind testplugin; did you mean listed?`,
		file + `:48: policy.override[0].results.spf.sofail: unknown result of kind spf; did you mean softfail?`,
	}, "\n") + "\n"
	if r.code != 1 || r.stderr != want {
		t.Fatalf("check: exit %d, stderr:\n%s\nwant exit 1 and:\n%s", r.code, r.stderr, want)
	}
}

// TestResultWordTypoRefused: [stage.results] fial = "reject" and
// results.spf.sofail in an override passed check and serve, and a forged
// SPF-fail sender was then accepted. serve and test refuse them now, with
// the line and the word meant; reload runs the same check (see the
// gateway's TestReload).
func TestResultWordTypoRefused(t *testing.T) {
	for _, tc := range []struct{ name, body, want string }{
		{"stage", "\n[[stage]]\nname = \"spf\"\nkind = \"spf\"\n[stage.results]\nfial = \"reject\"\n",
			":15: stage[0].results.fial: unknown result of kind spf; did you mean fail?"},
		{"override", "\n[[stage]]\nname = \"spf\"\nkind = \"spf\"\n\n[[policy.override]]\nrcpts = [\"legal@example.test\"]\nresults.spf.sofail = \"reject\"\n",
			":17: policy.override[0].results.spf.sofail: unknown result of kind spf; did you mean softfail?"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := writeConfig(t, tc.body)
			msg := filepath.Join(t.TempDir(), "msg.eml")
			os.WriteFile(msg, []byte("Subject: x\n\nhi\n"), 0o644)
			for _, args := range [][]string{
				{"check", "-config", file},
				{"serve", "-config", file},
				{"test", "-config", file, "-from", "a@example.org", "-to", "legal@example.test", msg},
			} {
				r := runMailgate(t, args...)
				if r.code != 1 || !strings.Contains(r.stderr, file+tc.want) {
					t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 1 and %q", args[0], r.code, r.stderr, file+tc.want)
				}
			}
		})
	}
}

// TestCheckLeavesNothing: check starts every stage once in a data_dir of
// its own, so the gateway's stays as it was (missing here): run as root
// before the service's first start, it used to leave directories there
// (greylist, dmarc, pickup) that the service's own user could not write.
func TestCheckLeavesNothing(t *testing.T) {
	file := writeConfig(t, `
[[stage]]
name = "grey"
kind = "greylist"

[[stage]]
name = "dmarc"
kind = "dmarc"
`)
	if r := runMailgate(t, "check", "-config", file); r.code != 0 {
		t.Fatalf("check: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	data := filepath.Join(filepath.Dir(file), "data")
	if _, err := os.Stat(data); !errors.Is(err, fs.ErrNotExist) {
		entries, _ := os.ReadDir(data)
		t.Errorf("check made the data_dir %s (%v): %v", data, err, entries)
	}
}
