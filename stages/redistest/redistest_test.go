package redistest

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// do sends one command in the Redis protocol's array form and returns the
// first line of the reply.
func do(t *testing.T, addr string, args ...string) string {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("dial %s: %v", addr, err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := conn.Write([]byte(b.String())); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(conn)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.HasPrefix(line, "$") && line != "$-1\r\n" {
		line, err = r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
	}
	return strings.TrimSuffix(line, "\r\n")
}

func TestStartKillRestart(t *testing.T) {
	s := Start(t)
	if got := do(t, s.Addr(), "SET", "k", "v"); got != "+OK" {
		t.Fatalf("SET: %q", got)
	}
	if got := do(t, s.Addr(), "GET", "k"); got != "v" {
		t.Fatalf("GET: %q", got)
	}

	s.Kill()
	if conn, err := net.DialTimeout("tcp", s.Addr(), time.Second); err == nil {
		conn.Close()
		t.Fatalf("%s still accepts connections after Kill", s.Addr())
	}
	s.Restart()
	// No persistence: a killed Redis comes back empty, on the same address.
	if got := do(t, s.Addr(), "GET", "k"); got != "$-1" {
		t.Fatalf("GET after restart: %q, want nil", got)
	}

	s.Stop()
	if err := ping(context.Background(), s.Addr()); err == nil {
		t.Fatal("PING answered after Stop")
	}
	s.Restart()
	if got := do(t, s.Addr(), "PING"); got != "+PONG" {
		t.Fatalf("PING after restart: %q", got)
	}
}
