package pgtest

import (
	"context"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
)

// query returns the integer sql selects, after running the statements of
// setup.
func query(t *testing.T, url, setup, sql string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if setup != "" {
		if _, err := conn.Exec(ctx, setup); err != nil {
			t.Fatalf("%s: %v", setup, err)
		}
	}
	var n int
	if err := conn.QueryRow(ctx, sql).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// TestKillRestart checks what fault tests rely on: a committed row
// survives kill -9 of the server, which comes back on the same address.
func TestKillRestart(t *testing.T) {
	s := Start(t)
	url := s.NewDatabase(t)
	if other := s.NewDatabase(t); other == url {
		t.Fatalf("NewDatabase gave %s twice", url)
	}
	query(t, url, "CREATE TABLE t (n int); INSERT INTO t VALUES (42)", "SELECT 1")

	s.Kill()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if conn, err := pgx.Connect(ctx, url); err == nil {
		conn.Close(ctx)
		t.Fatal("connected after Kill")
	}
	s.Restart()
	if n := query(t, url, "", "SELECT n FROM t"); n != 42 {
		t.Fatalf("after kill and restart: n = %d, want 42", n)
	}

	s.Stop()
	s.Restart()
	if n := query(t, url, "", "SELECT count(*)::int FROM t"); n != 1 {
		t.Fatalf("after stop and restart: %d rows, want 1", n)
	}
}
