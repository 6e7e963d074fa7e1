package sqlstore

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
	"github.com/mailgate/mailgate/state/statetest"
)

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// openPostgres opens a store on url as node, closed when the test ends.
func openPostgres(t *testing.T, url, node string) *Store {
	t.Helper()
	s, err := OpenPostgres(testCtx(t), url, Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func openSQLite(t *testing.T, path, node string) *Store {
	t.Helper()
	s, err := OpenSQLite(testCtx(t), path, Options{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestPostgres runs the conformance suite on a real PostgreSQL server, a
// fresh database per test; the nodes of a test are stores on one
// database, each with its own pool.
func TestPostgres(t *testing.T) {
	srv := pgtest.Start(t)
	statetest.Run(t, func(t *testing.T) func(*testing.T, string) state.Store {
		url := srv.NewDatabase(t)
		return func(t *testing.T, node string) state.Store { return openPostgres(t, url, node) }
	})
}

// TestSQLite runs the conformance suite on SQLite files; the nodes of a
// test are stores on one file, as the gateway and the command line are.
func TestSQLite(t *testing.T) {
	statetest.Run(t, func(t *testing.T) func(*testing.T, string) state.Store {
		path := filepath.Join(t.TempDir(), "state.db")
		return func(t *testing.T, node string) state.Store { return openSQLite(t, path, node) }
	})
}

func TestMigrations(t *testing.T) {
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) == 0 || SchemaVersion() != len(ms) {
		t.Fatalf("%d migrations, SchemaVersion %d", len(ms), SchemaVersion())
	}
	for _, d := range []dialect{postgres, sqlite} {
		for _, m := range ms {
			for _, stmt := range d.statements(m.sql) {
				if strings.Contains(stmt, "{{") || strings.HasPrefix(stmt, "--") {
					t.Errorf("%s: statement left with a placeholder or comment:\n%s", m.name, stmt)
				}
			}
		}
	}
}

// schemaVersion reads the version a database records.
func schemaVersion(t *testing.T, s *Store) int {
	t.Helper()
	var v int
	if err := queryRow(testCtx(t), s.db, "SELECT version FROM schema_version", nil, &v); err != nil {
		t.Fatal(err)
	}
	return v
}

// TestSchemaVersion: opening a database again migrates nothing and keeps
// what it holds; a database a newer mailgate migrated is refused, with an
// error that says what to do.
func TestSchemaVersion(t *testing.T) {
	srv := pgtest.Start(t)
	for name, open := range map[string]func(t *testing.T) (func() (*Store, error), *Store){
		"postgres": func(t *testing.T) (func() (*Store, error), *Store) {
			url := srv.NewDatabase(t)
			return func() (*Store, error) { return OpenPostgres(testCtx(t), url, Options{}) }, openPostgres(t, url, "a")
		},
		"sqlite": func(t *testing.T) (func() (*Store, error), *Store) {
			path := filepath.Join(t.TempDir(), "state.db")
			return func() (*Store, error) { return OpenSQLite(testCtx(t), path, Options{}) }, openSQLite(t, path, "a")
		},
	} {
		t.Run(name, func(t *testing.T) {
			reopen, s := open(t)
			if v := schemaVersion(t, s); v != SchemaVersion() {
				t.Fatalf("version %d after open, want %d", v, SchemaVersion())
			}
			if err := s.Audit().Record(testCtx(t), state.AuditEntry{Actor: "test", Action: "keep"}); err != nil {
				t.Fatal(err)
			}
			again, err := reopen()
			if err != nil {
				t.Fatalf("open again: %v", err)
			}
			es, err := again.Audit().Entries(testCtx(t), state.AuditFilter{})
			again.Close()
			if err != nil || len(es) != 1 {
				t.Fatalf("after opening again: %v, %v", es, err)
			}

			if _, err := s.db.exec(testCtx(t), "UPDATE schema_version SET version = $1", SchemaVersion()+1); err != nil {
				t.Fatal(err)
			}
			newer, err := reopen()
			if err == nil {
				newer.Close()
				t.Fatal("a newer schema was not refused")
			}
			if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "run the newer mailgate") {
				t.Errorf("newer schema: %v", err)
			}
			if v := schemaVersion(t, s); v != SchemaVersion()+1 {
				t.Errorf("the refused open changed the version to %d", v)
			}
		})
	}
}

// TestConcurrentStart has nodes start on an empty database at the same
// moment, as a cluster does after an upgrade: one migrates, the others
// wait and find the work done.
func TestConcurrentStart(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			s, err := OpenPostgres(testCtx(t), url, Options{})
			if err == nil {
				s.Close()
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
}

// TestPostgresDown: with the server gone an operation fails within the
// store's timeout instead of hanging, and once the server is back the
// store works again by itself.
func TestPostgresDown(t *testing.T) {
	srv := pgtest.Start(t)
	url := srv.NewDatabase(t)
	s, err := OpenPostgres(testCtx(t), url, Options{Node: "a", Timeout: 2 * time.Second, ConnectTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	entry := state.AuditEntry{Actor: "test", Action: "probe"}
	if err := s.Audit().Record(testCtx(t), entry); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	start := time.Now()
	if err := s.Audit().Record(testCtx(t), entry); err == nil {
		t.Fatal("a write with the server killed succeeded")
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a write with the server killed took %s; the timeout is 2s", d)
	}

	srv.Restart()
	// The pool drops the connections the kill broke; the first use of
	// one may fail before it does. Bounded: a store that does not come
	// back within a few tries has not recovered.
	var ok bool
	for range 3 {
		if err = s.Audit().Record(testCtx(t), entry); err == nil {
			ok = true
			break
		}
	}
	if !ok {
		t.Fatalf("store did not recover after the server restarted: %v", err)
	}
	es, err := s.Audit().Entries(testCtx(t), state.AuditFilter{})
	if err != nil || len(es) != 2 {
		t.Errorf("after restart: %d entries, %v; want the 2 that were written", len(es), err)
	}

	// Refused at the start when the server is down, naming the server,
	// not the password.
	srv.Stop()
	_, err = OpenPostgres(testCtx(t), strings.Replace(url, "mailgate@", "mailgate:secret@", 1), Options{ConnectTimeout: time.Second, Timeout: 2 * time.Second})
	if err == nil || strings.Contains(err.Error(), "secret") || !strings.Contains(err.Error(), srv.Addr()) {
		t.Errorf("open with the server stopped: %v", err)
	}
}
