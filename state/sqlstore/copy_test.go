package sqlstore

import (
	"crypto/sha256"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
)

var update = flag.Bool("update", false, "write testdata/state-v2.db again")

// fixtureV2 is a state.db as mailgate wrote it at schema version 2 (the
// console's revocations, before the claims of version 3), holding what
// fillV2 puts in it. cmd/mailgate's import test reads it too.
const fixtureV2 = "testdata/state-v2.db"

// Times in the fixture: fixed, as the file is.
var (
	fixtureAt     = time.Date(2026, 3, 14, 15, 9, 26, 535897000, time.UTC)
	fixtureLive   = time.Date(2099, 1, 1, 0, 0, 0, 0, time.UTC) // a session revoked until then
	fixtureExpire = time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC) // one past its expiry
)

// openVersion makes an SQLite database in path with the first version
// migrations only, as an older mailgate made it, and returns a store on
// it (not migrated further) as that mailgate's gateway, which keeps it
// open in WAL mode.
func openVersion(t *testing.T, path string, version int, node string) *Store {
	t.Helper()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	sdb, err := sql.Open("sqlite", path+"?_journal_mode=WAL&_txlock=immediate")
	if err != nil {
		t.Fatal(err)
	}
	s := &Store{db: sqlDB{sdb}, dialect: sqlite, node: node, timeout: 10 * time.Second}
	t.Cleanup(func() { s.Close() })
	stmts := []string{"CREATE TABLE schema_version (version BIGINT NOT NULL)", fmt.Sprintf("INSERT INTO schema_version (version) VALUES (%d)", version)}
	for _, m := range ms[:version] {
		stmts = append(stmts, sqlite.statements(m.sql)...)
	}
	for _, stmt := range stmts {
		if _, err := s.db.exec(testCtx(t), stmt); err != nil {
			t.Fatalf("%v\n%s", err, stmt)
		}
	}
	return s
}

// fillV2 writes what the fixture holds: two list entries of bob, three
// audit entries (two of them the same in every field, as two clicks in
// one microsecond would make), a live and an expired revoked session, and
// the links of bob (generation 2) and carol (1) revoked.
func fillV2(t *testing.T, s *Store) {
	t.Helper()
	ctx := testCtx(t)
	for _, e := range []state.ListEntry{
		{Owner: "bob@example.test", Kind: state.Block, Sender: "spam.example", Added: fixtureAt, By: "bob@example.test"},
		{Owner: "bob@example.test", Kind: state.Allow, Sender: "partner.example", Added: fixtureAt, By: "admin"},
	} {
		if err := s.Lists().Add(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	twice := state.AuditEntry{Time: fixtureAt, Actor: "admin", Action: "list.add", Target: "bob@example.test allow partner.example"}
	for _, e := range []state.AuditEntry{
		{Time: fixtureAt.Add(-time.Minute), Actor: "admin", Action: "quarantine.release", Target: "ORIG00000001", Detail: "queued as COPY00000001"},
		twice, twice,
	} {
		if err := s.Audit().Record(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	r := s.Revocations()
	if err := r.RevokeSession(ctx, "session-live", fixtureLive); err != nil {
		t.Fatal(err)
	}
	if err := r.RevokeSession(ctx, "session-old", fixtureExpire); err != nil {
		t.Fatal(err)
	}
	for _, rcpt := range []string{"bob@example.test", "Bob@example.test", "carol@example.test"} {
		if _, err := r.RevokeLinks(ctx, rcpt); err != nil {
			t.Fatal(err)
		}
	}
}

// TestFixtureV2: testdata/state-v2.db is a database of schema version 2
// with what fillV2 wrote; -update makes it again.
func TestFixtureV2(t *testing.T) {
	if *update {
		tmp := filepath.Join(t.TempDir(), "state.db")
		s := openVersion(t, tmp, 2, "single")
		fillV2(t, s)
		// Small pages, a small file in the repository.
		if _, err := s.db.exec(testCtx(t), "PRAGMA page_size = 512"); err != nil {
			t.Fatal(err)
		}
		os.Remove(fixtureV2)
		if _, err := s.db.exec(testCtx(t), "VACUUM INTO $1", fixtureV2); err != nil {
			t.Fatal(err)
		}
		// In WAL mode, as the gateway leaves it when it stops.
		wal, err := sql.Open("sqlite", fixtureV2+"?_journal_mode=WAL")
		if err == nil {
			err = wal.Ping()
			wal.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		os.Remove(fixtureV2 + "-wal") // empty, the file holds it all
		os.Remove(fixtureV2 + "-shm")
	}
	// On a copy: a read-only open beside the file makes its log.
	ro, err := OpenSQLiteReadOnly(testCtx(t), copyFixture(t, t.TempDir()), Options{})
	if err == nil {
		ro.Close()
	}
	if !errors.Is(err, ErrOlderSchema) || !strings.Contains(err.Error(), "version 2,") {
		t.Fatalf("the fixture opened read-only: %v; want it refused as version 2", err)
	}
}

// copyFixture copies the fixture into dir as state.db, dated an hour
// ago so that a write to it would show in its time.
func copyFixture(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(fixtureV2)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "state.db")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-time.Hour)
	if err := os.Chtimes(path, old, old); err != nil {
		t.Fatal(err)
	}
	return path
}

// fileState is what a reader must leave as it was: a file's bytes and
// time, and the names in its directory.
func fileState(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return fmt.Sprintf("sha256 %x, modified %s, beside %q", sha256.Sum256(b), fi.ModTime(), names)
}

// TestOpenSQLiteSnapshot: a database of an older schema (the fixture,
// version 2), alone or held open by its older gateway, is read through a
// migrated copy with all it holds, and neither its bytes nor its time nor
// its directory change; the copy is deleted at Close. A newer schema is
// refused before anything is copied.
func TestOpenSQLiteSnapshot(t *testing.T) {
	tmp := t.TempDir()
	t.Setenv("TMPDIR", tmp) // where the copies go
	check := func(t *testing.T, s *Store, lists int) {
		t.Helper()
		if v := schemaVersion(t, s); v != SchemaVersion() {
			t.Errorf("the copy has version %d, want %d", v, SchemaVersion())
		}
		if es, err := s.Lists().Entries(testCtx(t), ""); err != nil || len(es) != lists {
			t.Errorf("lists of the copy: %+v, %v; want %d entries", es, err, lists)
		}
		if es, err := s.Audit().Entries(testCtx(t), state.AuditFilter{}); err != nil || len(es) != 3 {
			t.Errorf("audit log of the copy: %+v, %v", es, err)
		}
		if gen, err := s.Revocations().LinkGeneration(testCtx(t), "bob@example.test"); err != nil || gen != 2 {
			t.Errorf("bob's link generation in the copy: %d, %v; want 2", gen, err)
		}
		if ok, err := s.Revocations().SessionRevoked(testCtx(t), "session-live"); err != nil || !ok {
			t.Errorf("session-live in the copy: %v, %v; want revoked", ok, err)
		}
	}
	closed := func(t *testing.T, s *Store) {
		t.Helper()
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "mailgate-state-*")); len(left) != 0 {
			t.Errorf("left in the temporary directory after Close: %v", left)
		}
	}

	t.Run("alone", func(t *testing.T) {
		path := copyFixture(t, t.TempDir())
		before := fileState(t, path)
		s, err := OpenSQLiteSnapshot(testCtx(t), path, Options{Node: "single"})
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, 2)
		closed(t, s)
		if after := fileState(t, path); after != before {
			t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
		}
	})

	t.Run("beside its gateway", func(t *testing.T) {
		path := copyFixture(t, t.TempDir())
		// The older gateway: the file open in WAL mode, not migrated.
		sdb, err := sql.Open("sqlite", path+"?_journal_mode=WAL&_txlock=immediate")
		if err != nil {
			t.Fatal(err)
		}
		gw := &Store{db: sqlDB{sdb}, dialect: sqlite, node: "single", timeout: 10 * time.Second}
		defer gw.Close()
		// An entry in the log, not yet in the file.
		if _, err := gw.db.exec(testCtx(t), "PRAGMA wal_autocheckpoint = 0"); err != nil {
			t.Fatal(err)
		}
		if err := gw.Lists().Add(testCtx(t), state.ListEntry{Owner: "carol@example.test", Kind: state.Block, Sender: "spam.example", By: "carol"}); err != nil {
			t.Fatal(err)
		}
		before, wal := fileState(t, path), fileState(t, path+"-wal")
		s, err := OpenSQLiteSnapshot(testCtx(t), path, Options{Node: "single"})
		if err != nil {
			t.Fatal(err)
		}
		check(t, s, 3)
		closed(t, s)
		if after := fileState(t, path); after != before {
			t.Errorf("the database changed:\nbefore %s\nafter  %s", before, after)
		}
		if after := fileState(t, path+"-wal"); after != wal {
			t.Errorf("its log changed:\nbefore %s\nafter  %s", wal, after)
		}
	})

	t.Run("newer", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "state.db")
		s := openSQLite(t, path, "a")
		if _, err := s.db.exec(testCtx(t), "UPDATE schema_version SET version = $1", SchemaVersion()+1); err != nil {
			t.Fatal(err)
		}
		s.Close()
		_, err := OpenSQLiteSnapshot(testCtx(t), path, Options{})
		if !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), path) {
			t.Fatalf("newer schema: %v", err)
		}
		if left, _ := filepath.Glob(filepath.Join(tmp, "mailgate-state-*")); len(left) != 0 {
			t.Errorf("left in the temporary directory: %v", left)
		}
	})
}

// TestCopy: Copy brings a single node's lists, audit log, revocations
// and claims into a store that has some of them already (PostgreSQL, as
// mailgate cluster import does, and SQLite): what the target has is kept
// or, for a revocation, raised to the source's; an end user's link the
// source refused is refused by the target; an audit entry keeps its time,
// node and actor, and the one made twice is there twice. A second Copy
// copies nothing.
func TestCopy(t *testing.T) {
	srv := pgtest.Start(t)
	for name, open := range map[string]func(t *testing.T, node string) *Store{
		"postgres": func(t *testing.T, node string) *Store { return openPostgres(t, srv.NewDatabase(t), node) },
		"sqlite": func(t *testing.T, node string) *Store {
			return openSQLite(t, filepath.Join(t.TempDir(), "state.db"), node)
		},
	} {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			src := openSQLite(t, filepath.Join(t.TempDir(), "state.db"), "single")
			fillV2(t, src)
			if ok, err := src.Claims().Claim(ctx, "digest/2026-03-14/bob@example.test", "single"); err != nil || !ok {
				t.Fatalf("claim: %v, %v", ok, err)
			}
			dst := open(t, "mx2")
			if err := dst.Lists().Add(ctx, state.ListEntry{Owner: "bob@example.test", Kind: state.Block, Sender: "spam.example", Added: fixtureAt.Add(time.Hour), By: "mx2-admin"}); err != nil {
				t.Fatal(err)
			}
			if err := dst.Audit().Record(ctx, state.AuditEntry{Time: fixtureAt, Actor: "admin", Action: "list.add", Target: "bob@example.test allow partner.example"}); err != nil {
				t.Fatal(err) // the same as the source's, but mx2's
			}
			if err := dst.Revocations().RevokeSession(ctx, "session-live", fixtureLive.Add(-time.Hour)); err != nil {
				t.Fatal(err)
			}
			for range 3 {
				if _, err := dst.Revocations().RevokeLinks(ctx, "carol@example.test"); err != nil {
					t.Fatal(err)
				}
			}

			got, err := dst.Copy(ctx, src)
			if err != nil {
				t.Fatal(err)
			}
			// bob's allow entry; the three audit entries; session-live's
			// later expiry (session-old is past); bob's links (carol's
			// are at 3 already); the claim.
			if want := (Copied{Lists: 1, Audit: 3, Sessions: 1, Links: 1, Claims: 1}); got != want {
				t.Errorf("first Copy: %+v, want %+v", got, want)
			}
			lists, err := dst.Lists().Entries(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			var ls []string
			for _, e := range lists {
				ls = append(ls, fmt.Sprintf("%s %s %s by %s at %s", e.Owner, e.Kind, e.Sender, e.By, e.Added.Format(time.RFC3339)))
			}
			if want := []string{
				"bob@example.test allow partner.example by admin at 2026-03-14T15:09:26Z",
				"bob@example.test block spam.example by mx2-admin at 2026-03-14T16:09:26Z",
			}; !slices.Equal(ls, want) {
				t.Errorf("lists:\n got %q\nwant %q", ls, want)
			}
			audit := func() []string {
				t.Helper()
				es, err := dst.Audit().Entries(ctx, state.AuditFilter{})
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range es {
					out = append(out, fmt.Sprintf("%s %s %s %s %s %q", e.Time.Format(time.RFC3339Nano), e.Node, e.Actor, e.Action, e.Target, e.Detail))
				}
				slices.Sort(out)
				return out
			}
			wantAudit := []string{
				`2026-03-14T15:08:26.535897Z single admin quarantine.release ORIG00000001 "queued as COPY00000001"`,
				`2026-03-14T15:09:26.535897Z mx2 admin list.add bob@example.test allow partner.example ""`,
				`2026-03-14T15:09:26.535897Z single admin list.add bob@example.test allow partner.example ""`,
				`2026-03-14T15:09:26.535897Z single admin list.add bob@example.test allow partner.example ""`,
			}
			if got := audit(); !slices.Equal(got, wantAudit) {
				t.Errorf("audit log:\n got %q\nwant %q", got, wantAudit)
			}
			revoked := func() {
				t.Helper()
				r := dst.Revocations()
				for rcpt, want := range map[string]int64{"bob@example.test": 2, "carol@example.test": 3, "dave@example.test": 0} {
					if gen, err := r.LinkGeneration(ctx, rcpt); err != nil || gen != want {
						t.Errorf("link generation of %s: %d, %v; want %d", rcpt, gen, err, want)
					}
				}
				for id, want := range map[string]bool{"session-live": true, "session-old": false} {
					if ok, err := r.SessionRevoked(ctx, id); err != nil || ok != want {
						t.Errorf("session %s revoked: %v, %v; want %v", id, ok, err, want)
					}
				}
				var exp int64
				if err := queryRow(ctx, dst.db, "SELECT expires FROM revoked_sessions WHERE id = 'session-live'", nil, &exp); err != nil || !fromMicros(exp).Equal(fixtureLive) {
					t.Errorf("session-live kept until %v (%v); want %v", fromMicros(exp), err, fixtureLive)
				}
				for node, want := range map[string]bool{"mx2": false, "single": true} {
					if ok, err := dst.Claims().Claim(ctx, "digest/2026-03-14/bob@example.test", node); err != nil || ok != want {
						t.Errorf("claim of %s: %v, %v; want %v", node, ok, err, want)
					}
				}
			}
			revoked()

			if got, err := dst.Copy(ctx, src); err != nil || got != (Copied{}) {
				t.Errorf("second Copy: %+v, %v; want nothing copied", got, err)
			}
			if got := audit(); !slices.Equal(got, wantAudit) {
				t.Errorf("audit log after a second Copy:\n got %q\nwant %q", got, wantAudit)
			}
			revoked()
		})
	}
}
