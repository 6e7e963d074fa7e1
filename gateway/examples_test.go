package gateway_test

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestExamplesCheck runs `mailgate check` on every example config users
// start from: it validates the config and starts every stage's plugin with
// its [stage.config], so an example that rots fails here.
func TestExamplesCheck(t *testing.T) {
	files, _ := filepath.Glob("../examples/*.toml")
	if len(files) < 2 {
		t.Fatalf("examples: %v", files)
	}
	for _, f := range files {
		out, err := exec.Command(mailgateBin, "check", "-config", f).CombinedOutput()
		if err != nil || !strings.Contains(string(out), ": ok (") {
			t.Errorf("mailgate check %s: %v\n%s", f, err, out)
		}
		// The summary counts what the file has.
		b, _ := os.ReadFile(f)
		if want := fmt.Sprintf("%d rate limits)", strings.Count(string(b), "\n[[ratelimit]]")); !strings.Contains(string(out), want) {
			t.Errorf("mailgate check %s: %q, want %q", f, out, want)
		}
	}
}

// TestCheckErrors: what check says about configs that are wrong, down to
// the line and the key.
func TestCheckErrors(t *testing.T) {
	for _, tc := range []struct{ name, config, want string }{
		{"unknown kind", "[[stage]]\nname = \"x\"\nkind = \"spamassassin\"\n",
			`bad.toml:6: stage[0].kind: unexpected "spamassassin"; expect arc, clamav, dkim, dkim-sign, dmarc, dnsbl, filetype, greylist, headers, milter, spam, spf or plugin`},
		{"kind refuses its config", "[[stage]]\nname = \"av\"\nkind = \"clamav\"\n[stage.config]\nadress = \"unix:/x\"\n",
			`bad.toml:8: stage[0].config.adress: unknown key`},
		{"a key [stage.results] replaced", "[[stage]]\nname = \"av\"\nkind = \"clamav\"\n[stage.config]\ninfected = \"quarantine\"\n",
			`bad.toml:8: stage[0].config.infected: replaced by [stage.results]: infected = "quarantine"`},
		{"missing plugin binary", "[[stage]]\nname = \"p\"\nkind = \"plugin\"\npath = \"/nonexistent/plugin\"\n",
			`bad.toml:7: stage[0].path: stage "p": start plugin: fork/exec /nonexistent/plugin: no such file or directory`},
		{"typo in a key", "[server]\nmax_mesage_size = \"1MB\"\n",
			`bad.toml:5: server.max_mesage_size: unknown key; did you mean max_message_size?`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			f := filepath.Join(dir, "bad.toml")
			os.WriteFile(f, []byte("hostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n\n"+tc.config), 0o644)
			cmd := exec.Command(mailgateBin, "check", "-config", "bad.toml")
			cmd.Dir = dir
			out, err := cmd.CombinedOutput()
			if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
				t.Fatalf("exit: %v\n%s", err, out)
			}
			if !strings.Contains(string(out), tc.want) {
				t.Fatalf("output:\n%s\nwant it to contain:\n%s", out, tc.want)
			}
		})
	}
}
