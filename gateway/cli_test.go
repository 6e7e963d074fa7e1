package gateway_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestQueueSelection: what a postqueue/postsuper user reaches for. The
// list has a recipients column; list and the operations select by
// sender, recipient and age, or take ALL; flush tries every waiting
// message now but not held ones; flags may follow the IDs; a typo in a
// flag is refused instead of taken as an ID.
func TestQueueSelection(t *testing.T) {
	stuck := smtptest.NewServer(t)
	stuck.Stop()
	fg := startFromFile(t, routeTo(stuck, "stuck.test"))
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	good := queuedAs(t, c.SendMail("alice@sender.test", []string{"c@stuck.test"}, message("good@test", "x\r\n")))
	bad := queuedAs(t, c.SendMail("spam@bad.test", []string{"d@stuck.test", "e@stuck.test"}, message("bad@test", "x\r\n")))
	third := queuedAs(t, c.SendMail("carol@sender.test", []string{"f@stuck.test"}, message("third@test", "x\r\n")))

	list := fg.must("queue", "list")
	for _, want := range []string{"TO", good, bad, third, "c@stuck.test", "d@stuck.test,e@stuck.test"} {
		if !strings.Contains(list, want) {
			t.Errorf("queue list lacks %q:\n%s", want, list)
		}
	}
	if out := fg.must("queue", "list", "-from", "BAD.test"); !strings.Contains(out, bad) || strings.Contains(out, good) || strings.Contains(out, third) {
		t.Errorf("queue list -from BAD.test:\n%s", out)
	}
	if out := fg.must("queue", "list", "-to", "f@"); !strings.Contains(out, third) || strings.Contains(out, bad) {
		t.Errorf("queue list -to f@:\n%s", out)
	}
	if out := fg.must("queue", "list", "-older", "1h"); strings.Contains(out, good) {
		t.Errorf("queue list -older 1h lists a new message:\n%s", out)
	}

	// A selection acts on what it selects, and says what it did.
	if out := fg.must("queue", "hold", "-from", "bad.test"); strings.TrimSpace(out) != bad+": held" {
		t.Errorf("queue hold -from bad.test: %q", out)
	}
	// Flags after the ID are flags (-json here), not IDs.
	out, ok := fg.mailgate("queue", "hold", third, "-json")
	if !ok || strings.TrimSpace(out) != third+": held" {
		t.Errorf("queue hold ID -json (ok=%v): %q", ok, out)
	}
	// A mistyped flag after an ID is refused, and nothing is done.
	cmd := exec.Command(mailgateBin, "queue", "release", third, "-confg", fg.cli)
	if out, err := cmd.CombinedOutput(); exitCode(err) != 2 || !strings.Contains(string(out), "flag provided but not defined: -confg") {
		t.Errorf("queue release ID -confg: exit %d\n%s", exitCode(err), out)
	}
	// An operation with nothing to act on is a usage error, not "all".
	if out, ok := fg.mailgate("queue", "delete"); ok || !strings.Contains(out, "usage: mailgate queue") {
		t.Errorf("queue delete with no IDs (ok=%v):\n%s", ok, out)
	}

	// flush retries what waits, held mail excepted.
	flushed := fg.must("queue", "flush")
	if !strings.Contains(flushed, good+": due now") || strings.Contains(flushed, bad) || strings.Contains(flushed, third) {
		t.Errorf("queue flush:\n%s", flushed)
	}
	// ALL releases both held messages; then they are delivered with the
	// rest once the server is back.
	if out := fg.must("queue", "release", "ALL"); !strings.Contains(out, bad+": released") || !strings.Contains(out, third+": released") {
		t.Errorf("queue release ALL:\n%s", out)
	}
	stuck.Restart()
	fg.must("queue", "flush")
	stuck.WaitFor(3, waitLong)
}

// TestCommandHelp: every command and subcommand answers -h with its usage
// and exit 0; an unknown subcommand is a usage error (exit 2).
func TestCommandHelp(t *testing.T) {
	for _, args := range [][]string{
		{"-h"}, {"serve", "-h"}, {"check", "-h"}, {"test", "-h"}, {"plugins", "-h"}, {"trace", "-h"}, {"reload", "-h"},
		{"queue", "-h"}, {"queue", "list", "-h"}, {"queue", "show", "-h"}, {"queue", "flush", "-h"},
		{"queue", "retry", "-h"}, {"queue", "hold", "-h"}, {"queue", "release", "-h"}, {"queue", "delete", "-h"},
		{"quarantine", "-h"}, {"quarantine", "list", "-h"}, {"quarantine", "show", "-h"},
		{"quarantine", "release", "-h"}, {"quarantine", "delete", "-h"},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, err := exec.CommandContext(ctx, mailgateBin, args...).CombinedOutput()
		cancel()
		if exitCode(err) != 0 || !regexp.MustCompile(`(?i)usage`).Match(out) {
			t.Errorf("mailgate %s: exit %d\n%s", strings.Join(args, " "), exitCode(err), out)
		}
	}
	for _, args := range [][]string{{"queue", "frobnicate"}, {"quarantine", "frobnicate"}, {"check", "my.toml"}} {
		out, err := exec.Command(mailgateBin, args...).CombinedOutput()
		if exitCode(err) != 2 {
			t.Errorf("mailgate %s: exit %d, want 2\n%s", strings.Join(args, " "), exitCode(err), out)
		}
	}
}

func exitCode(err error) int {
	if err == nil {
		return 0
	}
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode()
	}
	panic(fmt.Sprint(err))
}

// TestVersion: the binary names the revision it was built from, in
// `mailgate version` and in mailgate_build_info on /metrics.
func TestVersion(t *testing.T) {
	rev, err := exec.Command("git", "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout (%v): the build has no revision to report", err)
	}
	// The go command stamps the revision only where .git is a directory:
	// not in a linked worktree (git worktree add), whose .git is a file.
	if top, err := exec.Command("git", "rev-parse", "--show-toplevel").Output(); err == nil {
		if fi, err := os.Stat(filepath.Join(strings.TrimSpace(string(top)), ".git")); err == nil && !fi.IsDir() {
			t.Skip("a linked git worktree: the go command does not stamp the revision there")
		}
	}
	want := string(rev[:12])
	out, err := exec.Command(mailgateBin, "version").CombinedOutput()
	// A pseudo-version of the module (v0.0.0-<time>-<revision>) or the
	// bare revision; either way, the revision.
	if err != nil || !strings.HasPrefix(string(out), "mailgate ") || !strings.Contains(string(out), want) {
		t.Fatalf("mailgate version: %q (%v), want the revision %s", out, err, want)
	}
}
