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
// read the file but not write it or by root, changes no byte of it and
// makes no file beside it. While no gateway has it open it has no
// write-ahead log, and it is read as immutable: it holds everything then,
// and a read-only connection to a database in WAL mode would make the
// log's index beside it, owned by whoever ran the command (root), where
// the gateway must write it when it starts. A schema other than this
// mailgate's is refused (ErrNewerSchema, ErrOlderSchema): the queries are
// this version's.
func OpenSQLiteReadOnly(ctx context.Context, path string, o Options) (*Store, error) {
	o.defaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	check := func(s *Store) error { return s.checkSchema(ctx, false) }
	// No gateway beside it (no log): immutable. Beside one, or if one
	// started meanwhile: through its log.
	_, werr := os.Stat(abs + "-wal")
	immutable := errors.Is(werr, fs.ErrNotExist)
	var s *Store
	if immutable {
		s, err = openReadOnly(abs, o, "&immutable=1", check)
	}
	if !immutable || err != nil && !errors.Is(err, ErrNewerSchema) && !errors.Is(err, ErrOlderSchema) {
		s, err = openReadOnly(abs, o, "", check)
	}
	if err != nil {
		return nil, fmt.Errorf("sqlite %s (read-only): %w", path, err)
	}
	return s, nil
}

// OpenSQLiteSnapshot opens a copy of the SQLite database in the file
// path, migrated to this mailgate's schema: what a reader needs that
// must not touch a file a running gateway, perhaps of an older version,
// holds (mailgate cluster import). The file is read through a read-only
// connection and copied as one consistent snapshot (VACUUM INTO, a read
// transaction) into a directory of its own under the system's temporary
// directory, readable by its owner only; Close deletes it. A schema
// newer than this mailgate's is refused (ErrNewerSchema) before anything
// is copied.
//
// While no gateway has the file open (it has no write-ahead log) it is
// read as immutable: a read-only connection to a database in WAL mode
// would make the log and its index beside it and leave them there, owned
// by whoever ran the command (root), where the gateway must write them
// when it starts. A gateway that started during the copy shows in the
// log or in the file's time, and the copy is made again through its log.
func OpenSQLiteSnapshot(ctx context.Context, path string, o Options) (*Store, error) {
	o.defaults()
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	}
	dir, err := os.MkdirTemp("", "mailgate-state-")
	if err != nil {
		return nil, fmt.Errorf("sqlite %s: a directory for its copy: %w", path, err)
	}
	snap := filepath.Join(dir, "state.db")
	vacuum := func(params string) error {
		ro, err := openReadOnly(abs, o, params, func(s *Store) error {
			if err := s.checkSchema(ctx, true); err != nil {
				return err
			}
			// Bounded by ctx alone, not by the timeout of one
			// operation: a large file takes longer to copy than a
			// query to answer.
			_, err := s.db.exec(ctx, "VACUUM INTO $1", snap)
			return err
		})
		if err != nil {
			return err
		}
		return ro.Close()
	}
	copied := false
	if before, err := alone(abs); err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("sqlite %s: %w", path, err)
	} else if before != nil {
		if err := vacuum("&immutable=1"); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("sqlite %s (read-only): %w", path, err)
		}
		after, err := alone(abs)
		copied = err == nil && after != nil && after.ModTime().Equal(before.ModTime()) && after.Size() == before.Size()
		if !copied {
			os.Remove(snap)
		}
	}
	if !copied {
		if err := vacuum(""); err != nil {
			os.RemoveAll(dir)
			return nil, fmt.Errorf("sqlite %s (read-only): %w", path, err)
		}
	}
	s, err := OpenSQLite(ctx, snap, o)
	if err != nil {
		os.RemoveAll(dir)
		return nil, fmt.Errorf("sqlite %s (its copy): %w", path, err)
	}
	s.remove = dir
	return s, nil
}

// alone returns the file at path while no gateway has it open (no
// write-ahead log beside it), or nil.
func alone(path string) (fs.FileInfo, error) {
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		return nil, err
	}
	return os.Stat(path)
}

// openReadOnly opens the file abs with mode=ro and params and runs check
// on it, the first statement to read it.
func openReadOnly(abs string, o Options, params string, check func(*Store) error) (*Store, error) {
	// A file: URI, so that SQLite reads mode and immutable.
	u := url.URL{Scheme: "file", Path: abs, RawQuery: fmt.Sprintf("mode=ro&_busy_timeout=%d%s", o.Timeout.Milliseconds(), params)}
	sdb, err := sql.Open("sqlite", u.String())
	if err != nil {
		return nil, err
	}
	s := &Store{db: sqlDB{sdb}, dialect: sqlite, node: o.Node, timeout: o.Timeout}
	if err := check(s); err != nil {
		sdb.Close()
		return nil, err
	}
	return s, nil
}

// checkSchema checks that the database has this mailgate's schema
// version, or, with older, one this mailgate migrates.
func (s *Store) checkSchema(ctx context.Context, older bool) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	have, err := schemaIn(ctx, s.db)
	if err != nil {
		return fmt.Errorf("schema version: %w", err)
	}
	switch want := SchemaVersion(); {
	case have > want:
		return fmt.Errorf("%w: the database has version %d, this mailgate knows up to %d; use the newer mailgate", ErrNewerSchema, have, want)
	case have < want && !older:
		return fmt.Errorf("%w: the database has version %d, this mailgate's is %d; a gateway of this version migrates it when it starts", ErrOlderSchema, have, want)
	}
	return nil
}
