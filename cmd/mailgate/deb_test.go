package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/testkit"
)

// debInstall installs the package for real, with dpkg and its maintainer
// scripts, in a private mount namespace where /etc, /usr and /var are
// overlays whose writes land in WORK: the host's own files, users and
// package database stay as they were. It writes what it finds to OUT.
const debInstall = `set -eu
deb=$1 out=$2 work=$3
for d in etc usr var; do
	mkdir -p "$work/$d/upper" "$work/$d/work"
	mount -t overlay overlay -o "lowerdir=/$d,upperdir=$work/$d/upper,workdir=$work/$d/work" "/$d"
done
export DEBIAN_FRONTEND=noninteractive
dpkg -i "$deb" > "$out/install.log" 2>&1
getent passwd mailgate > "$out/passwd"
stat -c '%n %U:%G %a' /usr/bin/mailgate /etc/mailgate/mailgate.toml /var/lib/mailgate /lib/systemd/system/mailgate.service /usr/share/man/man8/mailgate.8.gz /usr/share/man/man5/mailgate.toml.5.gz > "$out/stat"
dpkg-query -W -f='${Conffiles}\n' mailgate > "$out/conffiles"
readlink /etc/systemd/system/multi-user.target.wants/mailgate.service > "$out/enabled" || true
MANWIDTH=100 MANPAGER=cat man --warnings 8 mailgate > "$out/man8" 2> "$out/man8.err" || true
MANWIDTH=100 MANPAGER=cat man --warnings 5 mailgate.toml > "$out/man5" 2> "$out/man5.err" || true
setpriv --reuid=mailgate --regid=mailgate --clear-groups /usr/bin/mailgate check > "$out/check" 2>&1 || true
setpriv --reuid=mailgate --regid=mailgate --clear-groups /usr/bin/mailgate config -n > "$out/config" 2>&1 || true
systemd-analyze verify --man=no /lib/systemd/system/mailgate.service > "$out/verify" 2>&1 && echo verified >> "$out/verify" || true
systemd-analyze security --offline=yes /lib/systemd/system/mailgate.service > "$out/security" 2>&1 || true
echo "# edited by the admin" >> /etc/mailgate/mailgate.toml
dpkg -i "$deb" >> "$out/install.log" 2>&1
{ tail -n 1 /etc/mailgate/mailgate.toml; stat -c '%U:%G %a' /etc/mailgate/mailgate.toml; } > "$out/reinstalled"
# What a gateway that ran leaves in its data directory (its spool): dpkg
# removes the directory with the package only if it is empty, and mail
# not yet delivered must outlive a remove.
setpriv --reuid=mailgate --regid=mailgate --clear-groups mkdir /var/lib/mailgate/queue
dpkg -r mailgate >> "$out/install.log" 2>&1
{ ls -d /etc/mailgate/mailgate.toml /var/lib/mailgate /usr/bin/mailgate 2>&1 || true; } > "$out/removed"
dpkg -P mailgate >> "$out/install.log" 2>&1
{ ls -d /etc/mailgate/mailgate.toml /var/lib/mailgate 2>&1 || true; getent passwd mailgate || true; } > "$out/purged"
`

// TestDebianPackage builds the package with `make deb`, checks its files,
// owners, modes and conffiles as dpkg-deb lists them, then installs it with
// dpkg into a throwaway overlay of the system (debInstall) and checks the
// result: the mailgate user, its data directory, the config's group, the
// enabled unit, the manual pages, `mailgate check` of the installed config
// as that user, `systemd-analyze verify` and its security score, an edited
// config kept by a reinstall, remove and purge.
func TestDebianPackage(t *testing.T) {
	testkit.Need(t, "dpkg-deb", "dpkg")
	dir := t.TempDir()
	build := exec.Command("make", "-C", "../..", "deb", "DEBDIR="+dir)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("make deb: %v\n%s", err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(dir, "mailgate_*.deb"))
	if len(debs) != 1 {
		t.Fatalf("make deb made %q", debs)
	}
	deb := debs[0]
	dpkgDeb := func(args ...string) string {
		out, err := exec.Command("dpkg-deb", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("dpkg-deb %s: %v\n%s", args, err, out)
		}
		return string(out)
	}

	listing := dpkgDeb("-c", deb)
	for _, want := range []string{
		"-rwxr-xr-x root/root .* ./usr/bin/mailgate",
		"-rw-r----- root/root .* ./etc/mailgate/mailgate.toml",
		"-rw-r--r-- root/root .* ./lib/systemd/system/mailgate.service",
		"-rw-r--r-- root/root .* ./usr/share/man/man8/mailgate.8.gz",
		"-rw-r--r-- root/root .* ./usr/share/man/man5/mailgate.toml.5.gz",
		"-rw-r--r-- root/root .* ./usr/share/doc/mailgate/README.md",
		"-rw-r--r-- root/root .* ./usr/share/doc/mailgate/CHANGELOG.md",
		"-rw-r--r-- root/root .* ./usr/share/doc/mailgate/stages/spam/README.md",
		"drwxr-x--- root/root .* ./var/lib/mailgate/",
	} {
		if !regexp.MustCompile(`(?m)^` + want + `$`).MatchString(listing) {
			t.Errorf("dpkg-deb -c: no %q in\n%s", want, listing)
		}
	}
	if got := dpkgDeb("-I", deb, "conffiles"); got != "/etc/mailgate/mailgate.toml\n" {
		t.Errorf("conffiles %q, want /etc/mailgate/mailgate.toml only", got)
	}
	if got := dpkgDeb("-f", deb, "Package", "Depends", "Section"); got != "Package: mailgate\nDepends: adduser\nSection: mail\n" {
		t.Errorf("control fields:\n%s", got)
	}
	for _, s := range []string{"postinst", "prerm", "postrm"} {
		if !strings.Contains(dpkgDeb("-I", deb), " "+s+" ") {
			t.Errorf("no %s script", s)
		}
	}

	if os.Geteuid() != 0 {
		msg := "installing the package into a throwaway overlay needs root (a private mount namespace)"
		if os.Getenv("CI") != "" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	unshare := testkit.Need(t, "unshare", "util-linux")
	testkit.Need(t, "systemd-analyze", "systemd")
	testkit.Need(t, "man", "man-db")
	out, work := filepath.Join(dir, "out"), filepath.Join(dir, "work")
	os.Mkdir(out, 0o755)
	os.Mkdir(work, 0o755)
	script := filepath.Join(dir, "install.sh")
	os.WriteFile(script, []byte(debInstall), 0o644)
	if b, err := exec.Command(unshare, "--mount", "--propagation", "private", "sh", script, deb, out, work).CombinedOutput(); err != nil {
		log, _ := os.ReadFile(filepath.Join(out, "install.log"))
		t.Fatalf("install: %v\n%s\n%s", err, b, log)
	}
	read := func(name string) string {
		b, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if !regexp.MustCompile(`^mailgate:x:[0-9]+:[0-9]+:[^:]*:/var/lib/mailgate:/usr/sbin/nologin\n$`).MatchString(read("passwd")) {
		t.Errorf("mailgate user: %q", read("passwd"))
	}
	if want := "/usr/bin/mailgate root:root 755\n" +
		"/etc/mailgate/mailgate.toml root:mailgate 640\n" +
		"/var/lib/mailgate mailgate:mailgate 750\n" +
		"/lib/systemd/system/mailgate.service root:root 644\n" +
		"/usr/share/man/man8/mailgate.8.gz root:root 644\n" +
		"/usr/share/man/man5/mailgate.toml.5.gz root:root 644\n"; read("stat") != want {
		t.Errorf("installed files:\n%s\nwant\n%s", read("stat"), want)
	}
	if got := read("conffiles"); !regexp.MustCompile(`^ /etc/mailgate/mailgate.toml [0-9a-f]{32}\n$`).MatchString(got) {
		t.Errorf("dpkg's conffiles %q", got)
	}
	if got := read("enabled"); got != "/lib/systemd/system/mailgate.service\n" {
		t.Errorf("the unit is not enabled: %q", got)
	}
	if !strings.Contains(read("man8"), "mailgate config [-config FILE]") || !strings.Contains(read("man5"), "max_message_size") ||
		read("man8.err")+read("man5.err") != "" {
		t.Errorf("man 8 mailgate, man 5 mailgate.toml:\n%s\n%s", read("man8.err"), read("man5.err"))
	}
	if got := read("check"); got != "/etc/mailgate/mailgate.toml: ok (1 routes, 2 stages, 0 rate limits)\n" {
		t.Errorf("mailgate check of the installed config, as mailgate: %q", got)
	}
	if !strings.Contains(read("config"), "data_dir = \"/var/lib/mailgate\"\nserver.listen = [\":25\"]\n") {
		t.Errorf("mailgate config -n:\n%s", read("config"))
	}
	if got := read("verify"); got != "verified\n" {
		t.Errorf("systemd-analyze verify:\n%s", got)
	}
	m := regexp.MustCompile(`Overall exposure level for mailgate.service: ([0-9.]+) `).FindStringSubmatch(read("security"))
	if m == nil {
		t.Fatalf("systemd-analyze security:\n%s", read("security"))
	}
	if score, _ := strconv.ParseFloat(m[1], 64); score > 2 {
		t.Errorf("systemd-analyze security: exposure %s, want at most 2", m[1])
	}
	readme, _ := os.ReadFile("../../README.md")
	if !strings.Contains(string(readme), "exposure level for mailgate.service: "+m[1]) {
		t.Errorf("README.md does not give the security score %s of systemd-analyze security", m[1])
	}
	if got := read("reinstalled"); got != "# edited by the admin\nroot:mailgate 640\n" {
		t.Errorf("after a reinstall the config is\n%s", got)
	}
	if got := read("removed"); got != "ls: cannot access '/usr/bin/mailgate': No such file or directory\n/etc/mailgate/mailgate.toml\n/var/lib/mailgate\n" {
		t.Errorf("after remove (config and data stay):\n%s", got)
	}
	if got := read("purged"); !strings.Contains(got, "cannot access '/etc/mailgate/mailgate.toml'") || !strings.Contains(got, "cannot access '/var/lib/mailgate'") ||
		!strings.Contains(got, "mailgate:x:") {
		t.Errorf("after purge (config and data gone, the user stays):\n%s", got)
	}
}
