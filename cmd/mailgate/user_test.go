package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
)

// TestUserAdd: `mailgate user add` adds an account whose hash verifies
// the password given on stdin to the config, which still loads; a name
// taken already leaves the file as it was.
func TestUserAdd(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mailgate.toml")
	orig := "hostname = \"mx.example.test\"\ndata_dir = \"" + dir + "\"\n[web]\nlisten = \"127.0.0.1:8080\""
	if err := os.WriteFile(file, []byte(orig), 0o640); err != nil {
		t.Fatal(err)
	}
	add := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command(mailgateBin, append([]string{"user", "add", "-config", file}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	if out, err := add("correct horse\n", "-role", "auditor", "alice"); err != nil {
		t.Fatalf("user add: %v\n%s", err, out)
	}
	cfg, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Web.Users) != 1 || cfg.Web.Users[0].Name != "alice" || cfg.Web.Users[0].Role != "auditor" ||
		!cfg.Web.Users[0].PasswordHash.Verify("correct horse") {
		t.Fatalf("users %+v", cfg.Web.Users)
	}
	if st, _ := os.Stat(file); st.Mode().Perm() != 0o640 {
		t.Errorf("mode %v, want 0640 kept", st.Mode().Perm())
	}
	before, _ := os.ReadFile(file)
	out, err := add("another one\n", "alice")
	if err == nil || !strings.Contains(out, `web.user[1].name: "alice" is used twice`) {
		t.Fatalf("a second alice: %v\n%s", err, out)
	}
	if after, _ := os.ReadFile(file); !bytes.Equal(before, after) {
		t.Fatal("a refused add changed the file")
	}
	if out, err := add("short\n", "bob"); err == nil || !strings.Contains(out, "at least 8") {
		t.Fatalf("short password: %v\n%s", err, out)
	}
	out, err = add("correct horse\n", "-print", "carol")
	if err != nil || !strings.HasPrefix(out, "[[web.user]]\nname = \"carol\"\npassword_hash = \"$argon2id$") {
		t.Fatalf("-print: %v\n%s", err, out)
	}
}

// TestCutTable: `mailgate user remove` cuts the account's table with the
// comment right above it and the blank lines after it, and keeps the
// next table's comment; a table it cannot cut cleanly is refused.
func TestCutTable(t *testing.T) {
	src := "[web]\nlisten = \"127.0.0.1:8080\"\n\n# alice\n[[web.user]]\nname = \"alice\"\n# her hash\npassword_hash = \"x\"\n\n# bob\n[[web.user]]\nname = \"bob\"\n"
	for _, c := range []struct {
		line int
		want string
	}{
		{5, "[web]\nlisten = \"127.0.0.1:8080\"\n\n# bob\n[[web.user]]\nname = \"bob\"\n"},
		{11, "[web]\nlisten = \"127.0.0.1:8080\"\n\n# alice\n[[web.user]]\nname = \"alice\"\n# her hash\npassword_hash = \"x\"\n\n"},
	} {
		got, err := cutTable([]byte(src), "f.toml:"+strconv.Itoa(c.line))
		if err != nil || string(got) != c.want {
			t.Errorf("cut at line %d: %v\n got %q\nwant %q", c.line, err, got, c.want)
		}
	}
	if _, err := cutTable([]byte(src), "f.toml:6"); err == nil {
		t.Error("a line that is not a header was cut")
	}
	got, err := replaceHash([]byte(src), "f.toml:8", "$2b$new")
	if err != nil || !strings.Contains(string(got), "# her hash\npassword_hash = \"$2b$new\"\n\n# bob") {
		t.Errorf("replaceHash: %v\n%s", err, got)
	}
	if _, err := replaceHash([]byte(src), "f.toml:6", "$2b$new"); err == nil {
		t.Error("a line that is not password_hash was replaced")
	}
}
