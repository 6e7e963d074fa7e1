package sqlstore

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/state"
)

// TestOpenSQLiteReadOnly: a database opened read-only is read and never
// written: its entries are there, a write is refused, its bytes stay; a
// missing file is not made; a schema newer or older than this mailgate's
// is refused with an error naming the file and the versions.
func TestOpenSQLiteReadOnly(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state.db")
	if _, err := OpenSQLiteReadOnly(testCtx(t), path, Options{}); err == nil {
		t.Fatal("a missing database opened")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a read-only open made the file")
	}
	rw := openSQLite(t, path, "a")
	entry := state.ListEntry{Owner: "bob@example.test", Kind: state.Block, Sender: "spam.example", By: "test"}
	if err := rw.Lists().Add(testCtx(t), entry); err != nil {
		t.Fatal(err)
	}
	rw.Close()
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ro, err := OpenSQLiteReadOnly(testCtx(t), path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	es, err := ro.Lists().Entries(testCtx(t), "Bob@example.test")
	if err != nil || len(es) != 1 || es[0].Sender != "spam.example" {
		t.Fatalf("entries %+v, %v", es, err)
	}
	if err := ro.Lists().Add(testCtx(t), state.ListEntry{Owner: "bob@example.test", Kind: state.Allow, Sender: "x.example", By: "test"}); err == nil {
		t.Error("a read-only store took a write")
	}
	ro.Close()
	if after, _ := os.ReadFile(path); !bytes.Equal(before, after) {
		t.Fatal("the read-only open changed the file")
	}
	// Nothing made beside it either: a reader run as root (mailgate
	// test) would leave a log and its index owned by root, which the
	// gateway, running as its own user, could not open when it starts.
	for _, extra := range []string{"-wal", "-shm", "-journal"} {
		if _, err := os.Stat(path + extra); err == nil {
			t.Errorf("the read-only open left %s beside the database", filepath.Base(path+extra))
		}
	}

	// Beside a gateway that has it open (a write-ahead log).
	rw = openSQLite(t, path, "a")
	for _, c := range []struct {
		version int
		err     error
		says    string
	}{
		{SchemaVersion(), nil, ""},
		{SchemaVersion() + 1, ErrNewerSchema, "use the newer mailgate"},
		{SchemaVersion() - 1, ErrOlderSchema, "migrates it when it starts"},
	} {
		if _, err := rw.db.exec(testCtx(t), "UPDATE schema_version SET version = $1", c.version); err != nil {
			t.Fatal(err)
		}
		ro, err := OpenSQLiteReadOnly(testCtx(t), path, Options{})
		switch {
		case c.err == nil && err != nil:
			t.Errorf("beside the gateway: %v", err)
		case c.err == nil:
			ro.Close()
		case !errors.Is(err, c.err) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), c.says):
			t.Errorf("version %d: %v", c.version, err)
		}
	}
}
