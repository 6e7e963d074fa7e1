package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"golang.org/x/crypto/bcrypt"
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

// userConfig writes a config with the account alice (password "old
// password") to file, the admin API off: no gateway is asked to reload.
func userConfig(t *testing.T, file string) {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte("old password"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	src := fmt.Sprintf("hostname = \"mx.example.test\"\ndata_dir = %q\n[admin]\nlisten = \"\"\n[web]\nlisten = \"127.0.0.1:8080\"\n\n[[web.user]]\nname = \"alice\"\npassword_hash = %q\n", t.TempDir(), h)
	if err := os.WriteFile(file, []byte(src), 0o640); err != nil {
		t.Fatal(err)
	}
}

// passwd runs `mailgate user passwd` for alice on file, with the new
// password "new password".
func passwd(file string) (string, error) {
	cmd := exec.Command(mailgateBin, "user", "passwd", "-config", file, "alice")
	cmd.Stdin = strings.NewReader("new password\n")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// checkPasswd checks that file's alice has the new password.
func checkPasswd(t *testing.T, file string) {
	t.Helper()
	cfg, err := policy.Load(file)
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Web.Users) != 1 || !cfg.Web.Users[0].PasswordHash.Verify("new password") {
		t.Fatalf("%s: alice does not have the new password", file)
	}
}

// TestUserPasswdKeepsOwner: the config keeps its owner, group and mode
// through `mailgate user passwd`, as the package installs it (root:mailgate
// 0640): a copy in the group of whoever ran the command is one the
// gateway may not read. As root the file belongs to others than root;
// otherwise to the test's user and another of its groups.
func TestUserPasswdKeepsOwner(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mailgate.toml")
	userConfig(t, file)
	uid, gid := os.Getuid(), -1
	if uid == 0 {
		uid, gid = 4242, 4243
	} else {
		groups, _ := os.Getgroups()
		for _, g := range groups {
			if g != os.Getgid() {
				gid = g
			}
		}
		if gid < 0 {
			msg := "the test needs root, or a user in a group besides its own"
			if os.Getenv("CI") != "" {
				t.Fatal(msg)
			}
			t.Skip(msg)
		}
	}
	if err := os.Chown(file, uid, gid); err != nil {
		t.Fatal(err)
	}
	if out, err := passwd(file); err != nil {
		t.Fatalf("user passwd: %v\n%s", err, out)
	}
	checkPasswd(t, file)
	st, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	sys := st.Sys().(*syscall.Stat_t)
	if int(sys.Uid) != uid || int(sys.Gid) != gid || st.Mode().Perm() != 0o640 {
		t.Errorf("after passwd: %d:%d %v, want %d:%d 0640", sys.Uid, sys.Gid, st.Mode().Perm(), uid, gid)
	}
}

// TestUserPasswdSymlink: a config that is a symlink stays one; the file
// it points to gets the new hash, and nothing is left beside either.
func TestUserPasswdSymlink(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "real"), 0o755); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, "real", "mailgate.toml")
	userConfig(t, target)
	link := filepath.Join(dir, "mailgate.toml")
	if err := os.Symlink("real/mailgate.toml", link); err != nil {
		t.Fatal(err)
	}
	if out, err := passwd(link); err != nil {
		t.Fatalf("user passwd: %v\n%s", err, out)
	}
	if to, err := os.Readlink(link); err != nil || to != "real/mailgate.toml" {
		t.Fatalf("the config is no longer the symlink: %q, %v", to, err)
	}
	checkPasswd(t, target)
	for d, want := range map[string]int{dir: 2, filepath.Join(dir, "real"): 1} {
		if entries, _ := os.ReadDir(d); len(entries) != want {
			t.Errorf("%s holds %d entries, want %d (a temporary file left?)", d, len(entries), want)
		}
	}
}

// TestReplaceFileRefusesChanged: a file edited between the command's read
// and its write is left with the edit, and the command says to retry.
func TestReplaceFileRefusesChanged(t *testing.T) {
	file := filepath.Join(t.TempDir(), "mailgate.toml")
	if err := os.WriteFile(file, []byte("edited\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	err := replaceFile(file, []byte("as read\n"), []byte("new\n"))
	if !errors.Is(err, errChanged) {
		t.Fatalf("replaceFile over a changed file: %v, want errChanged", err)
	}
	if b, _ := os.ReadFile(file); string(b) != "edited\n" {
		t.Fatalf("the edit was lost: %q", b)
	}
	if entries, _ := os.ReadDir(filepath.Dir(file)); len(entries) != 1 {
		t.Errorf("%d entries, want the file alone", len(entries))
	}
}

// TestUserPasswdRefusesOwnerItCannotKeep: run by a user who may write the
// directory but may not give a file to the config's owner, the command
// refuses and leaves the file as it was (it never puts one of its own in
// its place). Run as nobody when the tests are root; otherwise the test's
// user is the one.
func TestUserPasswdRefusesOwnerItCannotKeep(t *testing.T) {
	if os.Geteuid() != 0 {
		msg := "the test needs root: to make a config another user owns, in a directory the test's user may write"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	const nobody = 65534
	dir := t.TempDir()
	// nobody must reach the binary and the directory.
	for _, d := range []string{filepath.Dir(mailgateBin), filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "mailgate.toml")
	userConfig(t, file)
	if err := os.Chmod(file, 0o666); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(file)
	cmd := exec.Command(mailgateBin, "user", "passwd", "-config", file, "alice")
	cmd.Stdin = strings.NewReader("new password\n")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: nobody, Gid: nobody}}
	out, err := cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), "belongs to root:root and a copy cannot be given to them") {
		t.Fatalf("passwd as nobody: %v\n%s", err, out)
	}
	after, _ := os.ReadFile(file)
	st, _ := os.Stat(file)
	if !bytes.Equal(before, after) || st.Sys().(*syscall.Stat_t).Uid != 0 {
		t.Error("the file was changed or replaced")
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("%d entries, want the file alone", len(entries))
	}
}
