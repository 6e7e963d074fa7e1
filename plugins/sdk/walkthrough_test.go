package sdk_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// walkthroughBlock returns the code block that follows the marker
// "<!-- walkthrough: NAME" in plugins/README.md.
func walkthroughBlock(t *testing.T, readme, name string) string {
	t.Helper()
	re := regexp.MustCompile("(?s)<!-- walkthrough: " + regexp.QuoteMeta(name) + "[ >].*?\n```[a-z]*\n(.*?)```")
	m := re.FindStringSubmatch(readme)
	if m == nil {
		t.Fatalf("plugins/README.md has no walkthrough block %q", name)
	}
	return m[1]
}

// TestWalkthrough follows plugins/README.md's "Write a filter plugin" as
// an author does, from an empty directory outside the source tree: the
// shell steps run as written (with MAILGATE_SRC pointing at this
// checkout), main.go and main_test.go are the README's blocks, the
// author's own test must pass, and `mailgate test` with the README's
// [[stage]] shows the plugin's verdict.
func TestWalkthrough(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a module and the mailgate binary")
	}
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	src, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir() // outside the tree
	bin := t.TempDir()
	env := append(os.Environ(), "MAILGATE_SRC="+src, "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"))
	sh := func(dir, script string) string {
		t.Helper()
		cmd := exec.Command("bash", "-e", "-c", script)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("%s\n%v\n%s", script, err, out)
		}
		return string(out)
	}

	sh(work, walkthroughBlock(t, readme, "module"))
	dir := filepath.Join(work, "helocheck")
	for _, f := range []string{"main.go", "main_test.go"} {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(walkthroughBlock(t, readme, f)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := sh(dir, walkthroughBlock(t, readme, "build"))
	if !strings.Contains(out, "ok  \texample.org/helocheck") {
		t.Fatalf("the author's test did not run:\n%s", out)
	}

	build := exec.Command("go", "build", "-o", filepath.Join(bin, "mailgate"), "./cmd/mailgate")
	build.Dir = src
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build mailgate: %v\n%s", err, out)
	}
	stage := strings.ReplaceAll(walkthroughBlock(t, readme, "stage"), "/usr/local/libexec/mailgate/helocheck", filepath.Join(dir, "helocheck"))
	config := `hostname = "mx.example.test"
data_dir = "` + filepath.Join(work, "data") + `"
[server]
listen = ["127.0.0.1:0"]
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:25"]
` + stage
	if err := os.WriteFile(filepath.Join(dir, "mailgate.toml"), []byte(config), 0o644); err != nil {
		t.Fatal(err)
	}
	msg := "From: you@example.org\r\nTo: me@example.test\r\nSubject: hi\r\nDate: Sun, 6 Dec 2026 10:00:00 +0000\r\nMessage-ID: <w@example.org>\r\n\r\nhello\r\n"
	if err := os.WriteFile(filepath.Join(dir, "message.eml"), []byte(msg), 0o644); err != nil {
		t.Fatal(err)
	}
	sh(dir, "mailgate check -config mailgate.toml")
	try := strings.Replace(walkthroughBlock(t, readme, "try"), "mailgate test ", "mailgate test -config mailgate.toml ", 1)
	out = sh(dir, try)
	if !regexp.MustCompile(`helocheck\s+helocheck\s+helo\s+tag\s+3\.00\s+no-dot`).MatchString(out) {
		t.Fatalf("mailgate test does not show the plugin's verdict:\n%s", out)
	}
}
