package gateway_test

import (
	"bufio"
	"bytes"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

// readmeBlock returns the commands of the shell block that follows marker
// in the README, one per command: continuation lines are joined, comments
// and blank lines dropped.
func readmeBlock(t *testing.T, marker string) []string {
	t.Helper()
	b, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.Index(s, marker)
	if i < 0 {
		t.Fatalf("README.md has no %q", marker)
	}
	s = s[i:]
	start := strings.Index(s, "```sh\n")
	end := strings.Index(s[start+6:], "```")
	if start < 0 || end < 0 {
		t.Fatalf("no shell block after %q", marker)
	}
	var cmds []string
	var cur string
	sc := bufio.NewScanner(strings.NewReader(s[start+6 : start+6+end]))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if i := strings.Index(line, "  #"); i >= 0 {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if strings.HasSuffix(line, `\`) {
			cur += strings.TrimSuffix(line, `\`)
			continue
		}
		cmds = append(cmds, cur+line)
		cur = ""
	}
	return cmds
}

var queuedRE = regexp.MustCompile(`250 2\.0\.0 Ok: queued as (\w+)`)

// TestREADMEQuickstart runs the README's first commands as a newcomer does:
// `mailgate serve` with no config in an empty directory, then the swaks,
// ls and trace lines of the README's quickstart block, unchanged, in
// another shell. A clean message is delivered into the Maildir with the
// spam fields, GTUBE is refused while the client waits, and the trace
// explains the delivered one.
func TestREADMEQuickstart(t *testing.T) {
	testkit.Need(t, "swaks", "swaks")
	cmds := readmeBlock(t, "<!-- quickstart:")
	if len(cmds) != 4 {
		t.Fatalf("README quickstart block: want swaks, ls, swaks, trace; got %q", cmds)
	}
	// The README's commands name the quickstart's ports as a reader types
	// them; a port another process holds would answer in its place.
	for _, addr := range []string{"127.0.0.1:2525", "127.0.0.1:8025"} {
		l, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("the quickstart needs %s free (the README's commands use it): %v", addr, err)
		}
		l.Close()
	}
	dir := t.TempDir()
	bin := t.TempDir()
	if err := os.Symlink(mailgateBin, filepath.Join(bin, "mailgate")); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"))

	serve := exec.Command(mailgateBin, "serve")
	serve.Dir = dir
	var log bytes.Buffer
	var logMu sync.Mutex
	serve.Stderr = writerFunc(func(p []byte) (int, error) {
		logMu.Lock()
		defer logMu.Unlock()
		return log.Write(p)
	})
	if err := serve.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		serve.Process.Kill()
		serve.Wait()
		if t.Failed() {
			logMu.Lock()
			t.Logf("mailgate serve log:\n%s", log.String())
			logMu.Unlock()
		}
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.Dial("tcp", "127.0.0.1:2525"); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("mailgate serve did not listen on 127.0.0.1:2525")
		}
		time.Sleep(50 * time.Millisecond)
	}

	run := func(c string) string {
		t.Helper()
		cmd := exec.Command("bash", "-c", c)
		cmd.Dir, cmd.Env = dir, env
		out, err := cmd.CombinedOutput()
		if err != nil && !strings.HasPrefix(c, "swaks") { // swaks exits non-zero on a 5xx
			t.Fatalf("%s: %v\n%s", c, err, out)
		}
		return string(out)
	}

	out := run(cmds[0])
	m := queuedRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("%s:\n%s\nwant 250 2.0.0 Ok: queued as <ID>", cmds[0], out)
	}
	id := m[1]

	// Delivery into the Maildir follows the 250 in the background: a
	// newcomer who looks too early looks again.
	var listing string
	for deadline := time.Now().Add(20 * time.Second); ; {
		listing = strings.TrimSpace(run(cmds[1]))
		if listing != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	files := strings.Fields(listing)
	if len(files) != 1 {
		t.Fatalf("%s: %q, want one message", cmds[1], listing)
	}
	msg, err := os.ReadFile(filepath.Join(dir, "mailgate-data", "maildir", "new", files[0]))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"X-Spam-Score: ", "X-Spam-Status: No, score=", "id " + id} {
		if !strings.Contains(string(msg), want) {
			t.Errorf("delivered message lacks %q:\n%s", want, msg)
		}
	}

	if out := run(cmds[2]); !strings.Contains(out, "550 5.7.1 ") {
		t.Errorf("%s:\n%s\nwant GTUBE refused with 550 5.7.1", cmds[2], out)
	}

	trace := run(strings.ReplaceAll(cmds[3], "QUEUE-ID", id))
	for _, want := range []string{id, "spam", "headers", "250 2.0.0 Ok: queued as " + id} {
		if !strings.Contains(trace, want) {
			t.Errorf("%s: lacks %q:\n%s", cmds[3], want, trace)
		}
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
