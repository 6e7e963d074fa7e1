package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
)

// ErrOlderSchema is returned by OpenSQLiteReadOnly for a database whose
// schema is older than this mailgate's: a gateway of this version
// migrates it when it starts, and a reader must not.
var ErrOlderSchema = errors.New("database schema is older than this mailgate")

// OpenSQLiteReadOnly opens the SQLite database in the file path to read
// it, never to write it: nothing is created or migrated (SQLite's
// mode=ro), so that a command run beside the gateway, by a user who may
// read the file but not write it or by root, changes no byte of it. While
// no gateway has it open it has no write-ahead log, and a reader that may
// not make the log's index beside it (a directory it may not write) reads
// the file as immutable: it holds everything then. A schema other than
// this mailgate's is refused (ErrNewerSchema, ErrOlderSchema): the
// queries are this version's.
func OpenSQLiteReadOnly(ctx context.Context, path string, o Options) (*Store, error) {
	o.defaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	open := func(params string) (*Store, error) {
		// A file: URI, so that SQLite reads mode and immutable.
		u := url.URL{Scheme: "file", Path: abs, RawQuery: fmt.Sprintf("mode=ro&_busy_timeout=%d%s", o.Timeout.Milliseconds(), params)}
		sdb, err := sql.Open("sqlite", u.String())
		if err != nil {
			return nil, err
		}
		s := &Store{db: sqlDB{sdb}, dialect: sqlite, node: o.Node, timeout: o.Timeout}
		if err := s.sameSchema(ctx); err != nil {
			sdb.Close()
			return nil, err
		}
		return s, nil
	}
	s, err := open("")
	if err != nil && !errors.Is(err, ErrNewerSchema) && !errors.Is(err, ErrOlderSchema) {
		if _, werr := os.Stat(abs + "-wal"); errors.Is(werr, fs.ErrNotExist) {
			s, err = open("&immutable=1")
		}
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s (read-only): %w", path, err)
	}
	return s, nil
}

// sameSchema checks that the database has this mailgate's schema version.
func (s *Store) sameSchema(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var have int
	if err := queryRow(ctx, s.db, "SELECT version FROM schema_version", nil, &have); err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	switch want := SchemaVersion(); {
	case have > want:
		return fmt.Errorf("%w: the database has version %d, this mailgate knows up to %d; use the newer mailgate", ErrNewerSchema, have, want)
	case have < want:
		return fmt.Errorf("%w: the database has version %d, this mailgate's is %d; a gateway of this version migrates it when it starts", ErrOlderSchema, have, want)
	}
	return nil
}
