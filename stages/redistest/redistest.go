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
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

// Server is a running redis-server; Kill, Stop, Restart and Log are its
// Daemon's.
type Server struct {
	*testkit.Daemon
	addr string
}

// Start starts redis-server and returns once it answers PING. It stops
// when the test ends. When redis-server is not installed the test fails
// under CI (CI set) and is skipped elsewhere, naming the package.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, dir := testkit.Need(t, "redis-server", "redis-server"), t.TempDir()
	s := &Server{}
	s.Daemon = testkit.NewDaemon(t, testkit.DaemonSpec{
		Name: "redis-server",
		Command: func() *exec.Cmd {
			_, port, _ := net.SplitHostPort(s.addr)
			return exec.Command(bin,
				"--bind", "127.0.0.1",
				"--port", port,
				"--dir", dir,
				"--pidfile", filepath.Join(dir, "redis.pid"),
				"--daemonize", "no",
				"--logfile", "", // stdout, which the test keeps
				"--save", "", // no snapshots: a test's data dies with the process
				"--appendonly", "no",
			)
		},
		Ready: func(ctx context.Context) error { return ping(ctx, s.addr) },
		// It starts in milliseconds, but a loaded machine is slow.
		StartTimeout: 30 * time.Second,
		StopSignal:   syscall.SIGTERM,
		StopTimeout:  10 * time.Second,
	})
	s.Launch(func() { s.addr = testkit.FreeAddr(t) })
	return s
}

// Addr is the server's address, 127.0.0.1:port.
func (s *Server) Addr() string { return s.addr }

// URL is the server's address as a redis:// URL of database 0.
func (s *Server) URL() string { return "redis://" + s.addr + "/0" }

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
