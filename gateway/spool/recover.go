package spool

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
)

// recover rebuilds the state of the spool from the log and the message
// files after a crash (or a clean Close: the steps are the same) and
// starts a new, compact log; see the package comment.
func (s *Spool) recover() error {
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := os.Mkdir(s.tmpDir, 0o700); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	x, err := replayFile(filepath.Join(s.dir, logName))
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	migrated, err := migrate(filepath.Join(s.dir, "env"), &x)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	msgs, err := readIDs(s.msgDir)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for id := range msgs {
		s.ids.observe(id)
		if _, ok := x.live[id]; !ok {
			if err := os.Remove(filepath.Join(s.msgDir, id)); err != nil {
				return fmt.Errorf("recover: remove uncommitted message: %w", err)
			}
		}
	}
	for id := range x.live {
		if !msgs[id] {
			delete(x.live, id) // a Remove cut short after it deleted the message
		}
	}
	s.x = x
	if err := s.compact(); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if migrated {
		// The new log holds these envelopes now.
		if err := os.RemoveAll(filepath.Join(s.dir, "env")); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
	}
	return nil
}

// migrate adds to x the envelopes of a spool written before the log, one
// file each in env/. An envelope that cannot be read fails the Open: its
// message would otherwise be removed as never committed.
func migrate(dir string, x *index) (bool, error) {
	ids, err := readIDs(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	for id := range ids {
		b, err := os.ReadFile(filepath.Join(dir, id))
		if err != nil {
			return false, fmt.Errorf("migrate: %w", err)
		}
		var js bytes.Buffer
		if err := json.Compact(&js, b); err != nil {
			return false, fmt.Errorf("migrate %s: %w", filepath.Join(dir, id), err)
		}
		x.live[id] = js.Bytes()
	}
	return true, nil
}

// compact writes the live envelopes into a new log that replaces the old
// one. The new log is written in tmp/ and flushed before the rename, so a
// crash leaves either log whole (recovery removes tmp/), and both say the
// same. Callers hold logMu, or are Open before the committer runs.
func (s *Spool) compact() error {
	gen := rand.Uint64()
	ids := make([]string, 0, len(s.x.live))
	for id := range s.x.live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	// The file becomes the log only once flushed, so every record in it
	// is durable for whoever reads it as the log.
	durable := uint64(len(ids)) + 1
	b := logHeader(gen)
	for i, id := range ids {
		b = appendRecord(b, gen, uint64(i)+1, durable, opCommit, id, s.x.live[id])
	}
	tmp := filepath.Join(s.tmpDir, logName)
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, logName))
	}
	if err != nil {
		f.Close()
		os.Remove(tmp)
		return fmt.Errorf("compact: %w", err)
	}
	// From the rename on, the new file is the log: the old one has no name
	// any more, and records appended to it would be lost at the next Open.
	if s.log != nil {
		s.log.Close()
	}
	s.log, s.gen, s.seq, s.durable, s.size = f, gen, durable, durable, int64(len(b))
	s.x.records = len(ids)
	if err := s.syncDir(s.dir); err != nil {
		// Whether the rename is on disk is unknown, so is which log a
		// restart reads: commit nothing more until then.
		s.logErr = fmt.Errorf("%s unusable after a failed directory sync (%w); restart to recover", logName, err)
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// maybeCompact compacts the log once dead records outnumber the live
// ones by far. A failed compaction is tried again when the log has grown
// as much again; the old log stays valid meanwhile. Callers hold logMu.
func (s *Spool) maybeCompact() {
	dead := s.x.dead()
	if dead < s.nextCompact || dead < 4*len(s.x.live) {
		return
	}
	if err := s.compact(); err != nil {
		s.nextCompact = 2 * dead
		return
	}
	s.nextCompact = s.compactMin
}

// appendLog appends b, some whole records, to the log. A failed write is
// cut off again, so that the records after it do not follow a torn one.
// Callers hold logMu.
func (s *Spool) appendLog(b []byte) error {
	if s.log == nil {
		return ErrClosed
	}
	if s.logErr != nil {
		return s.logErr
	}
	if _, err := s.log.Write(b); err != nil {
		if terr := s.log.Truncate(s.size); terr != nil {
			s.logErr = fmt.Errorf("%s unusable after a failed append (%w); restart to recover", logName, terr)
		}
		return fmt.Errorf("append to %s: %w", logName, err)
	}
	s.size += int64(len(b))
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}
