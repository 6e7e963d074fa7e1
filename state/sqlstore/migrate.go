package sqlstore

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strconv"
	"strings"
)

// migrationFiles are the schema's steps, NNNN_what.sql, applied in order
// of NNNN. A released step is never edited: a change is a new step.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrNewerSchema is returned by Open for a database whose schema a newer
// mailgate made: this one does not know it, and must not write to it.
var ErrNewerSchema = errors.New("database schema is newer than this mailgate")

// migration is one step of the schema.
type migration struct {
	version int
	name    string
	sql     string
}

// migrations returns the embedded steps in order. Their numbers run 1, 2,
// 3 … without a gap, so that the version of a database says which ran.
func migrations() ([]migration, error) {
	names, err := fs.Glob(migrationFiles, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []migration
	for _, name := range names {
		base := strings.TrimPrefix(name, "migrations/")
		num, _, _ := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if err != nil {
			return nil, fmt.Errorf("migration %s: name must start with its number", base)
		}
		b, err := migrationFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		out = append(out, migration{version: v, name: base, sql: string(b)})
	}
	slices.SortFunc(out, func(a, b migration) int { return a.version - b.version })
	for i, m := range out {
		if m.version != i+1 {
			return nil, fmt.Errorf("migration %s: expected number %d", m.name, i+1)
		}
	}
	return out, nil
}

// SchemaVersion is the schema version this mailgate writes.
func SchemaVersion() int {
	ms, err := migrations()
	if err != nil {
		panic(err) // the embedded files are checked by the tests
	}
	return len(ms)
}

// migrate brings the schema to this mailgate's version in one
// transaction, or refuses a database that is newer. Several nodes may
// start at once: on PostgreSQL an advisory lock lets one migrate while the
// others wait, then find nothing left to do; SQLite's write lock does the
// same.
func (s *Store) migrate(ctx context.Context) error {
	ms, err := migrations()
	if err != nil {
		return err
	}
	return s.db.inTx(ctx, func(q querier) error {
		if s.dialect == postgres {
			// The key is any constant that other users of the
			// database do not pick: "mailgate" in ASCII, as a big-endian integer.
			if _, err := q.exec(ctx, "SELECT pg_advisory_xact_lock(7881696737186903141)"); err != nil {
				return fmt.Errorf("lock schema: %w", err)
			}
		}
		if _, err := q.exec(ctx, "CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)"); err != nil {
			return fmt.Errorf("schema version: %w", err)
		}
		have, err := schemaIn(ctx, q)
		switch {
		case errors.Is(err, errNoRows):
			if _, err := q.exec(ctx, "INSERT INTO schema_version (version) VALUES (0)"); err != nil {
				return fmt.Errorf("schema version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("schema version: %w", err)
		}
		if have > len(ms) {
			return fmt.Errorf("%w: the database has version %d, this mailgate knows up to %d; run the newer mailgate, or point this one at another database", ErrNewerSchema, have, len(ms))
		}
		for _, m := range ms[have:] {
			for _, stmt := range s.dialect.statements(m.sql) {
				if _, err := q.exec(ctx, stmt); err != nil {
					return fmt.Errorf("migration %s: %w\n%s", m.name, err, stmt)
				}
			}
		}
		if _, err := q.exec(ctx, "UPDATE schema_version SET version = $1", len(ms)); err != nil {
			return fmt.Errorf("schema version: %w", err)
		}
		return nil
	})
}

// statements splits a migration into its statements, each ended by a ";"
// at the end of a line, with the dialect's words for the placeholders
// {{id}} and {{blob}}.
func (d dialect) statements(sql string) []string {
	var out []string
	for _, stmt := range strings.Split(sql, ";\n") {
		var lines []string
		for _, line := range strings.Split(stmt, "\n") {
			if !strings.HasPrefix(strings.TrimSpace(line), "--") {
				lines = append(lines, line)
			}
		}
		stmt = strings.TrimSpace(strings.Join(lines, "\n"))
		if stmt == "" {
			continue
		}
		out = append(out, strings.NewReplacer("{{id}}", d.id(), "{{blob}}", d.blob()).Replace(stmt))
	}
	return out
}
