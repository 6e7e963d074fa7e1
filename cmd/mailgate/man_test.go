package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestManPages: man renders mailgate(8) and mailgate.toml(5) without a
// warning, mailgate(8) has a section for every command of the table and
// its usage, and mailgate.toml(5) every config key.
func TestManPages(t *testing.T) {
	man := testkit.Need(t, "man", "man-db")
	dir := t.TempDir()
	render := func(section, name string) string {
		code, page, errOut := mailgate("man", section)
		if code != 0 {
			t.Fatalf("mailgate man %s: exit %d: %s", section, code, errOut)
		}
		file := filepath.Join(dir, name)
		os.WriteFile(file, []byte(page), 0o644)
		cmd := exec.Command(man, "--warnings", "-l", "-P", "cat", file)
		cmd.Env = append(os.Environ(), "MANWIDTH=200", "LANG=C.UTF-8")
		var stderr strings.Builder
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil || stderr.Len() > 0 {
			t.Errorf("man -l %s: %v\n%s", name, err, stderr.String())
		}
		return string(out)
	}

	page := render("8", "mailgate.8")
	for _, c := range commands() {
		if c.summary == "" || c.page == "" {
			t.Errorf("command %s has no summary or page text in the command table (commands.go)", c.name)
		}
		head := strings.TrimSpace("mailgate " + c.name + " " + c.synopsis)
		if !strings.Contains(page, "\n   "+head+"\n") {
			t.Errorf("mailgate(8) has no section %q", head)
		}
		if c.help != nil && !strings.Contains(page, "usage: mailgate "+c.name) {
			t.Errorf("mailgate(8) lacks the usage of %s", c.name)
		}
	}

	page = render("5", "mailgate.toml.5")
	for _, k := range policy.Keys() {
		name := k.Key[strings.LastIndex(k.Key, ".")+1:]
		if k.Table {
			name = "[" + k.Key + "]"
			if k.Type == "array of tables" {
				name = "[" + name + "]"
			}
		}
		if !strings.Contains(page, "\n       "+name) && !strings.Contains(page, "\n   "+name+"\n") {
			t.Errorf("mailgate.toml(5) lacks %s", k.Name)
		}
	}
	if !strings.Contains(page, `(array of strings; default ["127.0.0.1:2525"]) SMTP listeners`) {
		t.Errorf("mailgate.toml(5): server.listen not as expected:\n%s", page)
	}
}
