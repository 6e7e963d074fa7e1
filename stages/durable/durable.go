// Package durable writes files so that a crash (kill -9, power loss)
// leaves either the old content or the new content whole, never a torn
// file, and so that the names created, renamed or removed survive too: a
// file's own fsync does not cover its name in the directory (fsync(2)).
// The spool, the quarantine, Maildir delivery, the state files of the
// door controls and stages that hand mail to the gateway all write
// through it.
package durable

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
)

// Sync flushes a file or a directory (the names in it: a rename, a new
// file, a removal) to stable storage.
func Sync(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	return err
}

// WriteFile replaces (or creates) path with b, mode 0600: b is written
// under a temporary name in tmpDir, synced, renamed over path, and
// path's directory synced. tmpDir must be on path's file system; ""
// is path's own directory, where the temporary name starts with a dot.
func WriteFile(path string, b []byte, tmpDir string) error {
	return Write(path, bytes.NewReader(b), tmpDir)
}

// Write is WriteFile with the content read from r (a message stored into
// a Maildir: tmpDir is its tmp/, path in its new/).
func Write(path string, r io.Reader, tmpDir string) error {
	dir := filepath.Dir(path)
	if tmpDir == "" {
		tmpDir = dir
	}
	tmp, err := os.CreateTemp(tmpDir, "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	_, err = io.Copy(tmp, r)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return Sync(dir)
}
