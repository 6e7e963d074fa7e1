package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/policy"
)

// mailgate runs the command in process and returns its exit code and
// output.
func mailgate(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := run(args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

// keysOf returns the keys of `mailgate config` lines.
func keysOf(t *testing.T, out string) []string {
	t.Helper()
	var keys []string
	for line := range strings.Lines(out) {
		k, _, ok := strings.Cut(line, " = ")
		if !ok {
			t.Fatalf("not a key = value line: %q", line)
		}
		keys = append(keys, k)
	}
	return keys
}

// tomlLeaves lists the keys a TOML file writes, named as mailgate names
// them (route[0].tls), from the file alone.
func tomlLeaves(prefix string, v any) []string {
	switch v := v.(type) {
	case map[string]any:
		var out []string
		for k, e := range v {
			name := k
			if prefix != "" {
				name = prefix + "." + k
			}
			out = append(out, tomlLeaves(name, e)...)
		}
		return out
	case []map[string]any:
		var out []string
		for i, e := range v {
			out = append(out, tomlLeaves(fmt.Sprintf("%s[%d]", prefix, i), e)...)
		}
		return out
	}
	return []string{prefix}
}

// TestConfigSetOnly: `mailgate config -n` on examples/gateway.toml prints
// exactly the keys written there, [stage.config] blocks included.
func TestConfigSetOnly(t *testing.T) {
	const file = "../../examples/gateway.toml"
	code, out, errOut := mailgate("config", "-config", file, "-n")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var raw map[string]any
	if _, err := toml.DecodeFile(file, &raw); err != nil {
		t.Fatal(err)
	}
	want := tomlLeaves("", raw)
	got := keysOf(t, out)
	slices.Sort(want)
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Errorf("mailgate config -n prints\n%s\nwant the keys\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if !strings.Contains(out, "server.filter_timeout = \"1m\"\n") || !strings.Contains(out, "stage[1].results.fail = \"reject\"\n") {
		t.Errorf("values not as loaded:\n%s", out)
	}
}

// TestConfigInForce: without -n every key is printed, the defaults of the
// keys a file does not set included; KEY picks a key or a table.
func TestConfigInForce(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mailgate.toml")
	os.WriteFile(file, []byte("hostname = \"mx.example.test\"\ndata_dir = \"/var/lib/mailgate\"\n[server]\nlisten = [\"127.0.0.1:25\"]\n[[route]]\ndomains = [\"example.test\"]\nservers = [\"10.0.0.5:25\"]\n"), 0o644)
	code, out, errOut := mailgate("config", "-config", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{
		`server.listen = ["127.0.0.1:25"]`,
		`server.max_recipients = 1000`,
		`server.command_timeout = "5m"`,
		`server.max_message_size = "50MB"`,
		`delivery.bounce_from = "MAILER-DAEMON@mx.example.test"`,
		`route[0].tls = "opportunistic"`,
		`admin.listen = "127.0.0.1:8025"`,
		`dns.servers = (the nameservers of /etc/resolv.conf)`,
		`policy.subject_tag = "[SPAM]"`,
	} {
		if !strings.Contains(out, "\n"+want+"\n") {
			t.Errorf("missing %s in\n%s", want, out)
		}
	}
	if n := len(keysOf(t, out)); n < 50 {
		t.Errorf("only %d keys", n)
	}

	code, out, _ = mailgate("config", "-config", file, "-n")
	if want := "hostname = \"mx.example.test\"\ndata_dir = \"/var/lib/mailgate\"\nserver.listen = [\"127.0.0.1:25\"]\nroute[0].domains = [\"example.test\"]\nroute[0].servers = [\"10.0.0.5:25\"]\n"; code != 0 || out != want {
		t.Errorf("-n: exit %d\n%s\nwant\n%s", code, out, want)
	}
	code, out, _ = mailgate("config", "server.max_hops", "-config", file, "route[0].tls")
	if want := "server.max_hops = 50\nroute[0].tls = \"opportunistic\"\n"; code != 0 || out != want {
		t.Errorf("config KEY: exit %d\n%s\nwant\n%s", code, out, want)
	}
	code, out, _ = mailgate("config", "-config", file, "admin")
	if want := "admin.listen = \"127.0.0.1:8025\"\n"; code != 0 || out != want {
		t.Errorf("config TABLE: exit %d\n%s\nwant\n%s", code, out, want)
	}
	code, _, errOut = mailgate("config", "-config", file, "server.max_hop")
	if code != 1 || !strings.Contains(errOut, "no key server.max_hop") {
		t.Errorf("unknown key: exit %d, %q", code, errOut)
	}
	code, _, errOut = mailgate("config", "-config", file, "-n", "-d")
	if code != 2 {
		t.Errorf("-n -d: exit %d, %q", code, errOut)
	}
}

// TestConfigDefaults: -d prints the default of every key that has one, as
// Reference documents it (whose test holds it to the loader's).
func TestConfigDefaults(t *testing.T) {
	code, out, errOut := mailgate("config", "-d")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, k := range policy.Keys() {
		line := k.Name + " = " + k.Default + "\n"
		has := strings.Contains(out, line)
		if want := !k.Table && k.Default != "" && k.Default != "(required)"; has != want {
			t.Errorf("%q printed: %v, want %v", line, has, want)
		}
	}
	code, out, _ = mailgate("config", "-d", "route[0].tls", "server.listen")
	if want := "route[].tls = \"opportunistic\"\nserver.listen = [\"127.0.0.1:2525\"]\n"; code != 0 || out != want {
		t.Errorf("-d KEY: exit %d\n%s\nwant\n%s", code, out, want)
	}
}

// TestVersion: `mailgate version` names the revision and build date the
// build gave it with -ldflags, as the Makefile does, though GOFLAGS turns
// Go's own VCS stamp off.
func TestVersion(t *testing.T) {
	r := runMailgate(t, "version")
	for _, want := range []string{"mailgate " + testRevision[:12] + "\n", "revision: " + testRevision + "\n", "built: " + testBuildDate + "\n", "go: go1."} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("mailgate version: exit %d, %q; want %q", r.code, r.stdout, want)
		}
	}
}

// TestMakefileStampsRevision: `make build` passes the checkout's revision
// and a build date to the linker.
func TestMakefileStampsRevision(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	out, err := exec.Command("make", "-n", "-C", "../..", "build").CombinedOutput()
	if err != nil {
		t.Fatalf("make -n build: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "-X main.revision="+strings.TrimSpace(string(rev))) || !strings.Contains(string(out), "-X main.buildDate=20") {
		t.Errorf("make build does not stamp the revision and date:\n%s", out)
	}
}
