package gateway_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/testkit"
)

// occupied returns a loopback address this test listens on until it ends.
func occupied(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l.Addr().String()
}

// TestStartupFailures makes each step of gateway.New and Start fail in
// turn. Each must return an error that says what failed, never panic, and
// leave nothing behind: the spool's lock released, no plugin process
// running, no port still bound. A gateway that fails to start is often
// started again at once, by an admin or by systemd.
func TestStartupFailures(t *testing.T) {
	for _, tc := range []struct {
		name    string
		listen  string                                 // [server] listen; "" for 127.0.0.1:0
		admin   string                                 // [admin] listen; "" for none
		stage   string                                 // a [[stage]] refusing its config, after a good one
		prepare func(t *testing.T, dataDir string)     // before New
		mutate  func(t *testing.T, cfg *policy.Config) // what a Go caller may build that a file cannot
		want    string                                 // in the error
		started bool                                   // New succeeds and Start fails
	}{
		{name: "spool locked", want: "open spool", prepare: func(t *testing.T, dir string) {
			sp, err := spool.Open(filepath.Join(dir, "queue"))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { sp.Close() })
		}},
		{name: "quarantine not a directory", want: "quarantine", prepare: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "quarantine"), "")
		}},
		{name: "quarantine record unreadable", want: "0123456789ABCDEF", prepare: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "quarantine", "0123456789ABCDEF.json"), "not JSON")
		}},
		{name: "trace not a directory", want: "trace", prepare: func(t *testing.T, dir string) {
			mustWrite(t, filepath.Join(dir, "trace"), "")
		}},
		{name: "config a Go caller broke", want: "test.toml:8: route[0].domains: required", mutate: func(t *testing.T, cfg *policy.Config) {
			cfg.Routes[0].Domains = nil
		}},
		{name: "stage refuses its config", want: "test.toml:20: stage[1].config.garbage: unexpected \"nope\"",
			stage: "\n[[stage]]\nname = \"bad\"\nkind = \"plugin\"\npath = %q\n[stage.config]\ngarbage = \"nope\"\n"},
		{name: "result word the stage does not declare", want: "test.toml:22: stage[1].results.lsited: unknown result of kind testplugin; did you mean listed?",
			stage: "\n[[stage]]\nname = \"words\"\nkind = \"plugin\"\npath = %q\n[stage.config]\nresults = [\"clean\", \"listed\"]\n[stage.results]\nlsited = \"reject\"\n"},
		{name: "smtp server", want: "server.tls_cert", mutate: func(t *testing.T, cfg *policy.Config) {
			cfg.Server.TLSCert, cfg.Server.TLSKey = filepath.Join(t.TempDir(), "no.crt"), filepath.Join(t.TempDir(), "no.key")
		}},
		{name: "listen", started: true, want: "listen 127.0.0.1:", listen: "occupied"},
		{name: "second listen", started: true, want: "listen 127.0.0.1:", listen: "free occupied"},
		{name: "admin listen", started: true, want: "admin listen 127.0.0.1:", listen: "free", admin: "occupied"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "data")
			if err := os.MkdirAll(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			// The good stage runs its own copy of the test plugin, so
			// that its processes are this test's alone.
			good := pluginCopy(t, "good")
			var free []string
			addrs := func(spec string) string {
				var out []string
				for _, w := range strings.Fields(spec) {
					switch w {
					case "free":
						a := testkit.FreeAddr(t)
						free = append(free, a)
						out = append(out, a)
					case "occupied":
						out = append(out, occupied(t))
					}
				}
				return quoteList(out)
			}
			listen := `"127.0.0.1:0"`
			if tc.listen != "" {
				listen = addrs(tc.listen)
			}
			admin := ""
			if tc.admin != "" {
				admin = strings.Trim(addrs(tc.admin), "[]")
			}
			conf := fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[server]
listen = [%s]
[admin]
listen = %s
[[route]]
domains = ["dest.test"]
servers = ["127.0.0.1:1"]
[[stage]]
name = "good"
kind = "plugin"
path = %q
`, dir, listen, orEmpty(admin), good)
			if tc.stage != "" {
				conf += fmt.Sprintf(tc.stage, testPluginBin)
			}
			cfg, err := policy.Parse("test.toml", []byte(conf))
			if err != nil {
				t.Fatalf("%v\n%s", err, conf)
			}
			if tc.prepare != nil {
				tc.prepare(t, dir)
			}
			if tc.mutate != nil {
				tc.mutate(t, cfg)
			}
			g, err := gateway.New(context.Background(), cfg, gateway.Options{Logger: testLogger(t)})
			switch {
			case tc.started && err != nil:
				t.Fatalf("New: %v", err)
			case tc.started:
				err = g.Start()
				if err == nil {
					g.Close()
				}
			case err == nil:
				g.Close()
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v; want one with %q", err, tc.want)
			}

			if tc.name != "spool locked" {
				sp, err := spool.Open(filepath.Join(dir, "queue"))
				if err != nil {
					t.Fatalf("the spool is still held: %v", err)
				}
				sp.Close()
			}
			deadline := time.Now().Add(10 * time.Second)
			for len(pluginPIDs(t, good)) > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("plugin processes still running: %v", pluginPIDs(t, good))
				}
				time.Sleep(20 * time.Millisecond)
			}
			for _, a := range free {
				l, err := net.Listen("tcp", a)
				if err != nil {
					t.Fatalf("%s is still bound: %v", a, err)
				}
				l.Close()
			}
		})
	}
}

func orEmpty(quoted string) string {
	if quoted == "" {
		return `""`
	}
	return quoted
}

func mustWrite(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}
