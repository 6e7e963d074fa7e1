// Package testkit is what tests need to run the real components users have
// next to mailgate: find a program (or fail under CI naming the Debian
// package to install), run a daemon for the length of a test, and start
// opendkim with a fresh key. It is for tests only, like net/http/httptest,
// and imports nothing of mailgate, so any package's tests may use it.
package testkit

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// Need returns the path of the program bin, looked up on PATH and in the
// sbin directories a non-root PATH lacks. When it is missing, the test
// fails under CI (CI=true: `make deps` installs it there) and is skipped
// elsewhere, naming the Debian package pkg either way: never a silent
// skip.
func Need(t testing.TB, bin, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, bin); isFile(p) {
			return p
		}
	}
	msg := fmt.Sprintf("%s not found: install the Debian package %s (apt-get install %s)", bin, pkg, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// FreeAddr returns a loopback address with a port nobody listens on right
// now, for a daemon that must be told its port.
func FreeAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// StartDaemon runs name with args in the foreground until the test ends,
// and returns once it accepts connections on addr. It fails t with the
// daemon's output if it exits first or does not listen within 30 s. The
// kernel kills the daemon if the test binary dies without cleaning up.
func StartDaemon(t testing.TB, addr, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	for deadline := time.Now().Add(30 * time.Second); ; {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", name, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %s", name, addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SyncBuffer is a bytes.Buffer a daemon or a gateway may write while the
// test reads it: the destination of their output and logs.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
