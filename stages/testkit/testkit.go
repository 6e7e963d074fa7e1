// Package testkit is what tests need to run the real components users have
// next to mailgate: find a program (or fail under CI naming the Debian
// package to install), run a daemon for the length of a test, and start
// opendkim with a fresh key. It is for tests only, like net/http/httptest,
// and imports nothing of mailgate, so any package's tests may use it.
package testkit

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
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
	addr, err := FreeLoopback()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

// FreeLoopback is FreeAddr for a caller without a testing.TB. The port is
// free for TCP and UDP both (a DNS server takes both), and lies below the
// kernel's ephemeral range (net.ipv4.ip_local_port_range): a port from
// that range, the kind Listen(":0") picks, can be taken by an outgoing
// connection of any test running meanwhile, before the daemon told of it
// binds it — with `go test ./...` running packages side by side, one of a
// cluster's eleven ports was, once in a while. Below the range only
// another listener can take it, and the ports are drawn at random.
func FreeLoopback() (string, error) {
	lo := ephemeralLow()
	for range 200 {
		port := lo - 1 - rand.IntN(min(lo-1024, 16384))
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if portFree(addr) {
			return addr, nil
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a crowded range: any port
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	defer ln.Close()
	return ln.Addr().String(), nil
}

// ephemeralLow is the first port of the kernel's ephemeral range; 32768,
// Linux's default, where it cannot be read.
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if lo, err := strconv.Atoi(f[0]); err == nil && lo > 2048 {
				return lo
			}
		}
	}
	return 32768
}

// portFree reports whether addr can be bound for TCP and UDP.
func portFree(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	defer ln.Close()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return false
	}
	pc.Close()
	return true
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
