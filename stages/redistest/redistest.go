// Package redistest starts a real redis-server (Debian package
// redis-server) for a test: on a free 127.0.0.1 port, with its files in a
// temporary directory, no persistence, stopped when the test ends. Fault
// tests kill it (kill -9) and start it again on the same address, as an
// operator's restart would; what it held is gone then, as it is for a
// Redis without persistence.
package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

const (
	// startTimeout bounds the wait for redis-server to answer PING; it
	// starts in milliseconds, but a loaded machine is slow.
	startTimeout = 30 * time.Second
	stopTimeout  = 10 * time.Second
	// attempts bounds the starts tried: the free port a start picks may
	// be taken by someone else before redis-server binds it.
	attempts = 3
)

// Server is a running redis-server.
type Server struct {
	t    testing.TB
	bin  string
	dir  string
	addr string

	mu   sync.Mutex
	proc *testkit.Process // nil while stopped
}

// Start starts redis-server and returns once it answers PING. It stops
// when the test ends. When redis-server is not installed the test fails
// under CI (CI set) and is skipped elsewhere, naming the package.
func Start(t testing.TB) *Server {
	t.Helper()
	s := &Server{t: t, bin: testkit.Need(t, "redis-server", "redis-server"), dir: t.TempDir()}
	var lastErr error
	for range attempts {
		s.addr = testkit.FreeAddr(t)
		if lastErr = s.start(); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("redistest: %v", lastErr)
	return nil
}

// Addr is the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return s.addr }

// URL is the server's address as a redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.addr + "/0" }

// Kill kills redis-server with SIGKILL and waits until it is gone; its
// data is lost. Restart starts it again.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Kill()
		s.proc = nil
	}
}

// Stop shuts redis-server down (SIGTERM) and waits until it is gone.
// Later calls do nothing; Restart starts it again.
func (s *Server) Stop() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		s.proc.Stop(syscall.SIGTERM, stopTimeout)
		s.proc = nil
	}
}

// Restart starts redis-server again on the same address after Kill or
// Stop, and returns once it answers PING. It fails the test if it cannot
// (someone else took the port meanwhile, say).
func (s *Server) Restart() {
	s.t.Helper()
	if err := s.start(); err != nil {
		s.t.Fatalf("redistest: restart: %v", err)
	}
}

// Log returns what redis-server has written, for a failure message.
func (s *Server) Log() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return "(redis-server is not running)"
	}
	return s.proc.Output()
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("redis-server on %s is already running", s.addr)
	}
	_, port, _ := net.SplitHostPort(s.addr)
	cmd := exec.Command(s.bin,
		"--bind", "127.0.0.1",
		"--port", port,
		"--dir", s.dir,
		"--pidfile", filepath.Join(s.dir, "redis.pid"),
		"--daemonize", "no",
		"--logfile", "", // stdout, which the test keeps
		"--save", "", // no snapshots: a test's data dies with the process
		"--appendonly", "no",
	)
	p, err := testkit.StartProcess(cmd)
	if err != nil {
		return err
	}
	if err := p.WaitReady(startTimeout, func(ctx context.Context) error { return ping(ctx, s.addr) }); err != nil {
		p.Kill()
		return fmt.Errorf("redis-server on %s: %w\n%s", s.addr, err, p.Output())
	}
	s.proc = p
	return nil
}

// ping sends PING as an inline command and expects +PONG (the Redis
// serialization protocol's simple string reply).
func ping(ctx context.Context, addr string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	if _, err := conn.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return err
	}
	if line != "+PONG\r\n" {
		return fmt.Errorf("PING: got %s", strconv.Quote(line))
	}
	return nil
}
