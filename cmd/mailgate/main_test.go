package main

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// mailgateBin is this command, built once: the tests run it as a user
// does, and it serves the built-in kinds to itself as plugins.
var mailgateBin string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailgate-cmd")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	mailgateBin = filepath.Join(dir, "mailgate")
	build := exec.Command("go", "build", "-o", mailgateBin, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build mailgate:", err)
		os.Exit(1)
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

// TestServeListenFails: a listen address in use stops serve with exit
// status 1 and the address, and no plugin process is left behind.
func TestServeListenFails(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	for _, tc := range []struct{ name, server, admin string }{
		{"smtp", l.Addr().String(), ""},
		{"admin", "127.0.0.1:0", l.Addr().String()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
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
`, filepath.Join(dir, "data"), tc.server, tc.admin)), 0o644)
			r := runMailgate(t, "serve", "-config", file)
			want := "listen " + l.Addr().String() + ": "
			if r.code != 1 || !strings.Contains(r.stderr, want) || strings.Contains(r.stderr, "panic") {
				t.Fatalf("exit %d, stderr:\n%s\nwant exit 1 and %q", r.code, r.stderr, want)
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
