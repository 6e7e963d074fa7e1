package spool

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"

	"golang.org/x/sys/unix"
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
	msgs, err := ReadIDs(s.msgDir, "")
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
	for id, msg := range x.inline {
		// The log has the bytes: a file lost or torn in the crash is
		// written again. The compaction below flushes it.
		if err := restore(filepath.Join(s.msgDir, id), msg); err != nil {
			return fmt.Errorf("recover: %w", err)
		}
		s.ids.observe(id)
		msgs[id] = true
		x.inline[id] = nil // the log's bytes are let go with the old log
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
	return nil
}

// restore makes the file at path hold msg, if it does not already: the
// file of a message committed inline may be missing or hold less, or
// other bytes, after a crash.
func restore(path string, msg []byte) error {
	if b, err := os.ReadFile(path); err == nil && bytes.Equal(b, msg) {
		return nil
	}
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		return fmt.Errorf("restore message: %w", err)
	}
	return nil
}

// A compaction writes the live envelopes into a new log that replaces the
// old one, in three steps, so that commits wait only for the last:
//
//  1. under logMu, snapshot: a copy of the live set and the old log's
//     size and seq at that point (on the committer between flushes, so the
//     index says exactly what the log holds);
//  2. without logMu, the snapshot is written to tmp/ and flushed, while
//     commits, updates and removes go on appending to the old log;
//  3. under logMu, on the committer between flushes (so every commit and
//     update in the old log is on disk and acknowledged or failed), swap:
//     the records the old log got since the snapshot are copied into the
//     new one with its gen and seqs, the new log is flushed and renamed
//     over the old one, and the directory is flushed.
//
// Until the rename the old log is the log, whole and saying everything
// acknowledged (recovery removes tmp/); from the rename on the new one is,
// and it was flushed with all of it before.
//
// The new log has no inline records: step 2 flushes the files of the
// messages committed inline (and msg/) before it writes their plain
// commits. Inline records appended since the snapshot are carried over
// in step 3 as they are.
type compaction struct {
	live   map[string][]byte // the snapshot
	inline []string          // its messages committed inline: files to flush
	msgDir string
	// syncMsgs makes msg/'s entries durable: through syncMsgDir once the
	// spool runs (one fsync of msg/ at a time, and none after one
	// failed: a later success would not cover what the failed one did
	// not write), directly at recovery.
	syncMsgs func() error
	syncFile func(*os.File) error // Spool.syncFile
	from     int64                // the old log's size at the snapshot
	fromSeq  uint64               // the seq of its next record then
	fromGen  uint64               // its gen

	tmp  string
	f    *os.File // the new log, once written
	gen  uint64
	n    int   // records in the new log
	size int64 // bytes in the new log
}

// msgSyncer is what a compaction calls to make the entries of msg/
// made so far durable (compaction.syncMsgs).
func (s *Spool) msgSyncer() func() error {
	if s.fsyncMsgDir == nil { // recovery: msg/ is not open yet
		return func() error { return s.syncDir(s.msgDir) }
	}
	need := s.entries.Load()
	return func() error { return s.syncMsgDir(need) }
}

// snapshot is step 1. Callers hold logMu.
func (s *Spool) snapshot() *compaction {
	return &compaction{
		live:     maps.Clone(s.x.live),
		inline:   slices.Collect(maps.Keys(s.x.inline)),
		msgDir:   s.msgDir,
		syncMsgs: s.msgSyncer(),
		syncFile: s.syncFile,
		from:     s.size,
		fromSeq:  s.seq,
		fromGen:  s.gen,
		tmp:      filepath.Join(s.tmpDir, logName),
	}
}

// compactChunk is how much of a new log is written and flushed at a
// time, so that its writeback comes in small pieces, not in one burst
// that the commits' fsyncs would queue behind on the disk.
const compactChunk = 1 << 20

// write is step 2: the snapshot, sorted by ID, in a flushed file in tmp/.
func (c *compaction) write() error {
	if err := c.syncInline(); err != nil {
		return err
	}
	c.gen = rand.Uint64()
	ids := slices.Sorted(maps.Keys(c.live))
	f, err := os.OpenFile(c.tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	c.f = f
	// The file becomes the log only once flushed, so every record in it
	// is durable for whoever reads it as the log.
	durable := uint64(len(ids)) + 1
	b := logHeader(c.gen)
	for i, id := range ids {
		b = appendRecord(b, c.gen, uint64(i)+1, durable, opCommit, id, c.live[id], nil)
		if len(b) >= compactChunk || i == len(ids)-1 {
			if err := c.flush(b); err != nil {
				return err
			}
			b = b[:0]
		}
	}
	if len(ids) == 0 {
		if err := c.flush(b); err != nil {
			return err
		}
	}
	c.live = nil
	c.n = len(ids)
	// The size and the directory entry of the file, for the rename.
	if err := f.Sync(); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// syncInline flushes the files of the snapshot's messages committed
// inline, and then their directory entries, so that the new log's plain
// commits of them follow durable files as every commit must. A file gone
// meanwhile was removed: the old log's tail says so.
func (c *compaction) syncInline() error {
	for _, id := range c.inline {
		f, err := os.Open(filepath.Join(c.msgDir, id))
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("compact: %w", err)
		}
		err = c.syncFile(f)
		f.Close()
		if err != nil {
			return fmt.Errorf("compact: fsync message %s: %w", id, err)
		}
	}
	if len(c.inline) > 0 {
		if err := c.syncMsgs(); err != nil {
			return fmt.Errorf("compact: %w", err)
		}
	}
	return nil
}

// flush writes b to the new log and makes it durable.
func (c *compaction) flush(b []byte) error {
	if _, err := c.f.Write(b); err != nil {
		return fmt.Errorf("compact: %w", err)
	}
	if err := unix.Fdatasync(int(c.f.Fd())); err != nil {
		return fmt.Errorf("compact: fdatasync: %w", err)
	}
	c.size += int64(len(b))
	return nil
}

// discard removes the new log of a compaction that failed or came too late.
func (c *compaction) discard() {
	if c.f != nil {
		c.f.Close()
	}
	os.Remove(c.tmp)
}

// swap is step 3. Callers hold logMu, and no flush is under way.
func (s *Spool) swap(c *compaction) error {
	if s.logErr != nil {
		c.discard()
		return fmt.Errorf("compact: %w", s.logErr)
	}
	tail, n, err := s.tail(c)
	if err == nil && len(tail) > 0 {
		if _, err = c.f.Write(tail); err == nil {
			s.step("tail")
			err = c.f.Sync()
		}
	}
	if err == nil {
		s.step("synced")
		err = os.Rename(c.tmp, filepath.Join(s.dir, logName))
	}
	if err != nil {
		c.discard()
		return fmt.Errorf("compact: %w", err)
	}
	s.step("renamed")
	// From the rename on, the new file is the log: the old one has no name
	// any more, and records appended to it would be lost at the next Open.
	if s.log != nil {
		s.log.Close()
	}
	seq := uint64(c.n+n) + 1
	s.log, s.gen, s.seq, s.durable, s.size = c.f, c.gen, seq, seq, c.size+int64(len(tail))
	s.x.records = c.n + n
	for _, id := range c.inline {
		delete(s.x.inline, id) // flushed, and committed without its bytes
	}
	s.compactedSize = s.size
	if err := s.syncDir(s.dir); err != nil {
		// Whether the rename is on disk is unknown, so is which log a
		// restart reads: commit nothing more until then.
		s.logErr = fmt.Errorf("%s unusable after a failed directory sync (%w); restart to recover", logName, err)
		return fmt.Errorf("compact: %w", err)
	}
	return nil
}

// tail is the records appended to the old log since the snapshot, as
// records of the new log, and how many. Callers hold logMu.
func (s *Spool) tail(c *compaction) ([]byte, int, error) {
	if s.size == c.from {
		return nil, 0, nil
	}
	old := make([]byte, s.size-c.from)
	if _, err := s.log.ReadAt(old, c.from); err != nil {
		return nil, 0, fmt.Errorf("compact: read %s: %w", logName, err)
	}
	// Every record in the new log is flushed before it becomes the log.
	durable := uint64(c.n) + 1
	var b []byte
	n := 0
	for len(old) > 0 {
		r, ok := decodeRecord(old, c.fromGen)
		if !ok || r.seq != c.fromSeq+uint64(n) {
			return nil, 0, fmt.Errorf("compact: %s: record %d unreadable", logName, c.fromSeq+uint64(n))
		}
		b = appendPayload(b, c.gen, uint64(c.n+n)+1, durable, r.payload)
		old = old[r.n:]
		n++
	}
	return b, n, nil
}

// step calls the test hook at a step of a compaction.
func (s *Spool) step(name string) {
	if s.compactStep != nil {
		s.compactStep(name)
	}
}

// compact runs all three steps of a compaction at once. Callers hold
// logMu, or are Open before the committer runs.
func (s *Spool) compact() error {
	c := s.snapshot()
	if err := c.write(); err != nil {
		c.discard()
		return err
	}
	return s.swap(c)
}

// maybeCompact starts a compaction in the background once dead records
// outnumber the live ones by far; the committer swaps the logs when it is
// written (see finishCompact). A failed compaction is tried again when
// the log has grown as much again; the old log stays valid meanwhile.
// Callers hold logMu and are the committer.
func (s *Spool) maybeCompact() {
	dead := s.x.dead()
	// Inline records make the log grow by the messages' size: compacted
	// once it has grown by inlineGrowth, however many are live.
	grown := s.size-s.compactedSize > inlineGrowth && len(s.x.inline) > 0
	if s.compacting || !grown && (dead < s.nextCompact || dead < 4*len(s.x.live)) {
		return
	}
	s.startCompact()
}

// startCompact takes the snapshot and writes it in the background.
// Callers hold logMu, and no flush is under way: records a flush has
// appended but not yet put in the index would be in neither the snapshot
// nor the tail.
func (s *Spool) startCompact() {
	s.compacting = true
	c := s.snapshot()
	s.compactWG.Go(func() {
		err := c.write()
		if err == nil {
			s.step("written")
		}
		s.compacted <- compactResult{c, err} // room for one: one compaction at a time
	})
}

// compactResult is a written (or failed) new log for the committer.
type compactResult struct {
	c   *compaction
	err error
}

// finishCompact swaps in a log written in the background. It runs on the
// committer between flushes.
func (s *Spool) finishCompact(r compactResult) {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	s.compacting = false
	err := r.err
	if err != nil {
		r.c.discard()
	} else {
		err = s.swap(r.c)
	}
	if err != nil {
		s.nextCompact = 2 * s.x.dead()
		s.compactedSize = s.size
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
