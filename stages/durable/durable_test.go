package durable

import (
	"os"
	"path/filepath"
	"testing"
)

// WriteFile replaces the file whole and leaves no temporary file, in the
// file's directory or in another one.
func TestWriteFile(t *testing.T) {
	dir, tmp := t.TempDir(), t.TempDir()
	path := filepath.Join(dir, "state")
	for _, c := range []struct{ data, tmpDir string }{{"one\n", ""}, {"two, longer\n", tmp}, {"3\n", ""}} {
		if err := WriteFile(path, []byte(c.data), c.tmpDir); err != nil {
			t.Fatal(err)
		}
		b, err := os.ReadFile(path)
		if err != nil || string(b) != c.data {
			t.Fatalf("read %q, %v; want %q", b, err, c.data)
		}
		fi, err := os.Stat(path)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("mode %v, %v; want 0600", fi.Mode(), err)
		}
	}
	for _, d := range []string{dir, tmp} {
		names, _ := os.ReadDir(d)
		if d == dir && len(names) != 1 || d == tmp && len(names) != 0 {
			t.Errorf("%s holds %v", d, names)
		}
	}
}

// A write that cannot finish leaves the old file and no temporary one.
func TestWriteFileFails(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state")
	if err := WriteFile(path, []byte("old"), ""); err != nil {
		t.Fatal(err)
	}
	// A directory in the way of the rename.
	if err := WriteFile(dir, []byte("new"), t.TempDir()); err == nil {
		t.Fatal("renaming over a directory succeeded")
	}
	if err := WriteFile(filepath.Join(dir, "missing", "x"), []byte("new"), ""); err == nil {
		t.Fatal("write into a missing directory succeeded")
	}
	if b, _ := os.ReadFile(path); string(b) != "old" {
		t.Fatalf("old file now %q", b)
	}
	if names, _ := os.ReadDir(dir); len(names) != 1 {
		t.Fatalf("%s holds %v", dir, names)
	}
}

func TestSyncMissing(t *testing.T) {
	if err := Sync(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("Sync of a missing path succeeded")
	}
}
