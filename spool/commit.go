package spool

import (
	"fmt"
	"os"
	"slices"

	"golang.org/x/sys/unix"
)

// job is one commit (data != nil) or envelope update waiting for a flush.
type job struct {
	id      string
	data    *os.File // the message file; nil for an update
	msgPath string
	entry   uint64 // the directory entry of the message file (Writer.entry)
	js      []byte // the envelope
	msg     []byte // the message's bytes for an inline commit, or nil
	done    chan error

	// Guarded by Spool.mu.
	abandoned bool // the committer's caller gave up waiting
	decided   bool // the committer has its result; too late to abandon
}

func (s *Spool) submit(j *job) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return ErrClosed
	}
	s.pending = append(s.pending, j)
	s.mu.Unlock()
	s.signal()
	return nil
}

func (s *Spool) signal() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// abandon marks j so that the committer removes its message instead of
// reporting on it. It reports false if the committer has already decided.
func (s *Spool) abandon(j *job) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if j.decided {
		return false
	}
	j.abandoned = true
	return true
}

// discard removes the message of a commit that never reached the
// committer.
func (s *Spool) discard(j *job) {
	j.data.Close()
	os.Remove(j.msgPath)
}

// commitLoop is the group committer: every job that arrives while a flush
// is running waits for the next one, so N concurrent commits cost about
// two flushes, not 2N.
func (s *Spool) commitLoop() {
	defer close(s.stopped)
	for {
		select {
		case <-s.wake:
		case r := <-s.compacted:
			s.finishCompact(r)
			continue
		}
		s.mu.Lock()
		batch := s.pending
		s.pending = nil
		closed := s.closed
		s.mu.Unlock()
		if len(batch) > 0 {
			s.flush(batch)
		}
		if closed {
			return // submit refuses new jobs once closed
		}
	}
}

// flush makes a batch durable in two steps, because a crash must never
// leave a commit record in the log whose message is not all on disk:
//
//  1. message files and their directory entries are flushed;
//  2. the batch's records are appended to the log in one write, and the
//     log is flushed (fdatasync): the commit point.
func (s *Spool) flush(batch []*job) {
	errs := make([]error, len(batch))
	commits := slices.ContainsFunc(batch, func(j *job) bool { return j.data != nil })
	if commits {
		s.syncMessages(batch, errs)
	}

	// From here on a caller that gives up is too late: its record may be
	// on disk.
	abandoned := make([]bool, len(batch))
	s.mu.Lock()
	for i, j := range batch {
		j.decided = true
		abandoned[i] = j.abandoned
	}
	s.mu.Unlock()

	s.logMu.Lock()
	var b []byte
	seq := s.seq
	for i, j := range batch {
		if errs[i] != nil || abandoned[i] {
			continue
		}
		op := opUpdate
		switch {
		case j.msg != nil:
			op = opInline
		case j.data != nil:
			op = opCommit
		}
		b = appendRecord(b, s.gen, seq, s.durable, op, j.id, j.js, j.msg)
		seq++
	}
	err := s.appendLog(b)
	if err == nil {
		s.seq = seq
	}
	log := s.log
	s.logMu.Unlock()

	// Outside logMu, so that a Remove does not wait for the flush. Its
	// record, appended meanwhile, is flushed too; that does no harm.
	if err == nil && len(b) > 0 {
		if ferr := unix.Fdatasync(int(log.Fd())); ferr != nil {
			err = fmt.Errorf("fdatasync %s: %w", logName, ferr)
			// Whether the records reached the disk is unknown, and a
			// later flush could make them durable after their callers
			// were told they failed: write nothing more.
			s.logMu.Lock()
			s.logErr = fmt.Errorf("%s unusable after a failed flush (%w); restart to recover", logName, ferr)
			s.logMu.Unlock()
		}
	}

	if err == nil {
		s.logMu.Lock()
		s.durable = max(s.durable, seq)
		for i, j := range batch {
			if errs[i] != nil || abandoned[i] {
				continue
			}
			s.x.records++
			if _, ok := s.x.live[j.id]; ok || j.data != nil {
				s.x.live[j.id] = j.js
			}
			if j.msg != nil {
				s.x.inline[j.id] = nil
			}
		}
		s.maybeCompact()
		s.logMu.Unlock()
	}

	for i, j := range batch {
		if errs[i] == nil {
			errs[i] = err
		}
		if j.data != nil {
			j.data.Close()
			if errs[i] != nil || abandoned[i] {
				// Not acknowledged, so not committed.
				os.Remove(j.msgPath)
			}
		}
		j.done <- errs[i]
	}
}

// syncMessages is step 1 of flush: each commit's message file was
// fsynced by its own Commit (its data, and each file's writeback error,
// which a file keeps for itself), so what is left is the directory
// entries of the new files: one fsync of msg/ for the batch, unless
// dirSyncLoop's fsyncs since the files were created cover them all
// already. An inline commit needs neither (its record has the bytes),
// but after a failed fsync of msg/ it fails too: the disk is in doubt.
// An error fails every commit of the batch.
//
// It was one syncfs(2) on the spool's file system, then an fsync per
// file, all in the committer. syncfs also writes back every dirty page of
// every other file on the same file system, and on the shared 2-core VM
// the bench runs on (ext4 without a journal, other builds writing) it
// took 8.5 ms at the median and 71 ms at p99, against 0.2 ms for an
// fdatasync: the 250 after "." waited for other programs' writes.
// BenchmarkCommit and BenchmarkCommitParallel (5 KB messages, 16
// goroutines per core), ms/op, two runs each, loaded:
//
//	                                       serial     parallel
//	syncfs + fsync per file (committer)    8.8-9.1    1.7-1.9
//	fsync per file (Commit) + fsync msg/   6.6-9.0    0.6-0.8
//
// and mailbench's line mailgate delivered 525 msg/s against 327 in the
// same run (p50 from "." to the reply 24 ms against 50). On a journaled
// file system concurrent fsyncs share the journal's commits, as the
// committer's batches share the log's fdatasync.
func (s *Spool) syncMessages(batch []*job, errs []error) {
	var newest uint64
	for _, j := range batch {
		if j.data != nil && j.msg == nil {
			newest = max(newest, j.entry)
		}
	}
	if err := s.syncMsgDir(newest); err != nil {
		for i := range errs {
			errs[i] = fmt.Errorf("fsync msg/: %w", err)
		}
	}
}

// newEntry numbers a directory entry just made in msg/ for a message of
// size bytes so far, and asks dirSyncLoop to make it durable if the
// message is past inlineMax already (else Writer.Write asks once it is).
func (s *Spool) newEntry(size int64) uint64 {
	n := s.entries.Add(1)
	if size > inlineMax {
		s.wakeDirSync()
	}
	return n
}

// wakeDirSync asks dirSyncLoop for an fsync of msg/. Only a message
// larger than inlineMax needs its directory entry durable: an inline
// commit's record holds the message, and an fsync of msg/ that nobody
// needs would only hold up the log's flush on the same disk.
func (s *Spool) wakeDirSync() {
	select {
	case s.dirWake <- struct{}{}:
	default:
	}
}

// syncMsgDir makes the first need entries of msg/ durable: unless an
// fsync has covered them already (as dirSyncLoop's mostly have), it
// fsyncs msg/ and records which entries that made durable: those made
// before it began. After an fsync of msg/ has failed, it fails
// always: what the directory holds on disk is unknown, and a later fsync
// may succeed without having written what the failed one did not (as
// with the log, restarting recovers).
//
// One at a time (dirMu): of two fsyncs of one file at the same moment the
// kernel may report a writeback error to one only, and the other, a
// success, must not count for the entries the failed one did not write.
func (s *Spool) syncMsgDir(need uint64) error {
	// Covered already: no waiting for an fsync under way that this one
	// does not need.
	if s.dirErr.Load() == nil && need <= s.dirDurable.Load() {
		return nil
	}
	s.dirMu.Lock()
	defer s.dirMu.Unlock()
	if err := s.dirErr.Load(); err != nil {
		return *err
	}
	if need <= s.dirDurable.Load() {
		return nil
	}
	upto := s.entries.Load()
	if err := s.fsyncMsgDir(); err != nil {
		err = fmt.Errorf("%w; the spool takes no more mail until a restart", err)
		s.dirErr.CompareAndSwap(nil, &err)
		return err
	}
	for {
		d := s.dirDurable.Load()
		if upto <= d || s.dirDurable.CompareAndSwap(d, upto) {
			return nil
		}
	}
}

// dirSyncLoop makes the directory entries of new message files durable
// while their messages are still arriving, so that a commit seldom waits
// for an fsync of msg/ on top of its message's and the log's: a message
// file is created at MAIL, and by the end of DATA one fsync here, shared
// by every file created meanwhile, has mostly covered it. An error stays
// for the commits to report (syncMsgDir).
func (s *Spool) dirSyncLoop() {
	defer close(s.dirStopped)
	for {
		select {
		case <-s.dirStop:
			return
		case <-s.dirWake:
		}
		s.syncMsgDir(s.entries.Load())
	}
}
