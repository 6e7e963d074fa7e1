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
	js      []byte // the envelope
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
		if j.data != nil {
			op = opCommit
		}
		b = appendRecord(b, s.gen, seq, s.durable, op, j.id, j.js)
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

// syncMessages is step 1 of flush; it sets the error of each commit
// whose message may not be on disk.
func (s *Spool) syncMessages(batch []*job, errs []error) {
	if err := s.syncData(); err != nil {
		for i := range errs {
			errs[i] = err
		}
		return
	}
	// syncfs reports a writeback error once per file system: an earlier
	// batch's syncfs may have consumed the error of pages of a message
	// that was still being received then, and those pages are now marked
	// clean though they never reached the disk. Each file keeps its own
	// error state, so an fsync per message file catches exactly that; it
	// costs little, as syncfs left nothing dirty to write.
	for i, j := range batch {
		if j.data != nil {
			if err := j.data.Sync(); err != nil {
				errs[i] = fmt.Errorf("fsync message: %w", err)
			}
		}
	}
}

// syncData is step 1 of flush.
//
// It is one syncfs(2) on the spool's file system rather than an fdatasync
// of every file plus an fsync of msg/. Both were measured with
// BenchmarkCommit and BenchmarkCommitParallel (5 KB messages, 16
// goroutines per core) on ext4 in a 2-core VM, first quiet, then with
// other builds writing to the same disk:
//
//	                     serial ms/op   parallel ms/op
//	parallel fdatasync   2.0-3.4        1.4-3.0   (quiet)
//	syncfs               1.1-2.6        1.1-1.7
//	parallel fdatasync   4.8-10.7       3.4-4.3   (loaded)
//	syncfs               2.9-4.2        1.0-2.1
//
// Concurrent fdatasyncs of freshly created files do not share one journal
// commit while other sessions keep creating files: a batch of ~15 commits
// spent ~20 ms in step 1, about one journal commit per file, against ~7 ms
// for syncfs, which forces a single journal commit for everything. The
// price is that syncfs also writes back dirty data of other files on the
// same file system (it won even so above), so the spool is best kept off
// file systems with bulk writers. Since Linux 5.8 syncfs reports writeback
// errors on the file system, ours included; an error fails the whole
// batch, which is safe.
func (s *Spool) syncData() error {
	if err := unix.Syncfs(int(s.msgDirF.Fd())); err != nil {
		return fmt.Errorf("syncfs: %w", err)
	}
	return nil
}
