package spool

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// TestInlineRestored: a small message's commit record carries its bytes,
// so a crash that loses its file, or a part of it, loses nothing: the
// next Open writes the file again, and its new log has no bytes left in
// it. A large message is committed the old way, its file flushed.
func TestInlineRestored(t *testing.T) {
	dir := t.TempDir()
	s1 := openT(t, dir, Options{})
	env := func() *Envelope {
		return &Envelope{From: "a@b.test", Rcpts: []Recipient{{Addr: "c@d.test", Status: Pending}}}
	}
	lost, torn, other, kept := message("lost", 5000), message("torn", 5000), message("other", 5000), message("kept", 5000)
	large := message("large", inlineMax+1)
	ws := map[string][]byte{}
	for _, m := range [][]byte{lost, torn, other, kept, large} {
		ws[commit(t, s1, m, env()).ID()] = m
	}
	x, err := replayFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.inline) != 4 {
		t.Fatalf("%d inline commits in the log, want the 4 small messages", len(x.inline))
	}
	for id, m := range ws {
		if bytes.Equal(m, large) {
			if _, ok := x.inline[id]; ok {
				t.Error("a message larger than inlineMax was committed inline")
			}
			continue
		}
		if !bytes.Equal(x.inline[id], m) {
			t.Errorf("inline record of %s does not hold its bytes", id)
		}
	}
	// What a power loss can do to files whose fsync was never asked for.
	for id, m := range ws {
		p := s1.MessagePath(id)
		switch {
		case bytes.Equal(m, lost):
			os.Remove(p)
		case bytes.Equal(m, torn):
			os.Truncate(p, 1000)
		case bytes.Equal(m, other):
			os.WriteFile(p, bytes.Repeat([]byte{0}, len(m)), 0o600)
		}
	}
	die(t, s1)

	s2 := openT(t, dir, Options{})
	if got := listIDs(t, s2); len(got) != len(ws) {
		t.Fatalf("after recovery %d messages listed, want %d", len(got), len(ws))
	}
	for id, want := range ws {
		m, err := s2.OpenMessage(id)
		if got := readAll(t, m, err); !bytes.Equal(got, want) {
			t.Errorf("message %s after recovery: %d bytes, not the %d committed", id, len(got), len(want))
		}
	}
	x, err = replayFile(filepath.Join(dir, logName))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.inline) != 0 || len(x.live) != len(ws) {
		t.Errorf("log after recovery: %d inline records, %d live; want 0 and %d", len(x.inline), len(x.live), len(ws))
	}
}

// TestCompactionFlushesInline: a compaction flushes the files of the
// messages committed inline and writes their plain commits, so the log
// stops carrying their bytes; a log grown by inlineGrowth since the last
// compaction is compacted however few records are dead.
func TestCompactionFlushesInline(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var dirSyncs atomic.Int32
	s.fsyncMsgDir = func() error { dirSyncs.Add(1); return s.msgDirF.Sync() }
	var l syncLog
	l.hook(s, true)
	var ids []string
	for i := range 5 {
		ids = append(ids, commit(t, s, message("m"+string(rune('a'+i)), 5000), &Envelope{From: "a@b.test"}).ID())
	}
	s.logMu.Lock()
	n := len(s.x.inline)
	err := s.compact()
	inline, size := len(s.x.inline), s.size
	s.logMu.Unlock()
	if n != 5 || err != nil || inline != 0 {
		t.Fatalf("compact: %v; inline commits before %d, after %d; want 5 and 0", err, n, inline)
	}
	if missing := l.notSynced(ids, "renamed"); len(missing) > 0 {
		t.Errorf("files of %v not fsynced before the new log, without their bytes, became the log; events: %v", missing, l.events)
	}
	if dirSyncs.Load() == 0 {
		t.Error("msg/ not flushed before the new log")
	}
	if size > 5*5000 {
		t.Errorf("compacted log is %d bytes: it still carries the messages", size)
	}

	// Growth: the next inline commit past inlineGrowth starts one.
	s.logMu.Lock()
	s.compactedSize = s.size - inlineGrowth
	s.logMu.Unlock()
	commit(t, s, message("grown", 5000), &Envelope{From: "a@b.test"})
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(time.Millisecond) {
		s.logMu.Lock()
		inline = len(s.x.inline)
		s.logMu.Unlock()
		if inline == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no compaction 10 s after the log grew past inlineGrowth")
		}
	}
}

// TestCloseLeavesNoInline: after a clean Close the log has no inline
// records, so a version of mailgate before them can read the spool.
func TestCloseLeavesNoInline(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	m := message("small", 3000)
	id := commit(t, s, m, &Envelope{From: "a@b.test"}).ID()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	x, err := replayFile(filepath.Join(dir, logName))
	if err != nil || len(x.inline) != 0 || x.live[id] == nil {
		t.Fatalf("log after Close: %d inline records, live %v, %v; want none inline, %s live", len(x.inline), x.live[id] != nil, err, id)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "msg", id)); err != nil || !bytes.Equal(b, m) {
		t.Errorf("message file after Close: %v", err)
	}
}

// TestCompactionAfterDirSyncFailed: once an fsync of msg/ has failed, a
// compaction does not drop inline records on the word of a later one:
// the entries the failed fsync did not write may not be on disk.
func TestCompactionAfterDirSyncFailed(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	commit(t, s, message("inline", 3000), &Envelope{From: "a@b.test"})
	s.fsyncMsgDir = func() error { return syscall.EIO }
	if err := s.syncMsgDir(s.entries.Load() + 1); err == nil {
		t.Fatal("a failing fsync of msg/ succeeded")
	}
	s.fsyncMsgDir = func() error { return s.msgDirF.Sync() } // the disk "recovers"
	s.logMu.Lock()
	err := s.compact()
	inline := len(s.x.inline)
	s.logMu.Unlock()
	if err == nil || inline != 1 {
		t.Fatalf("compact after a failed fsync of msg/: %v, %d inline commits left; want an error and 1", err, inline)
	}
}

// syncLog records in order the files a compaction fsyncs for its inline
// commits ("sync <id>") and the compaction's steps.
type syncLog struct {
	mu     sync.Mutex
	events []string
}

func (l *syncLog) add(e string) {
	l.mu.Lock()
	l.events = append(l.events, e)
	l.mu.Unlock()
}

// hook records s's inline fsyncs, and its steps unless steps is false
// (the test holds a compaction with its own compactStep).
func (l *syncLog) hook(s *Spool, steps bool) {
	s.syncFile = func(f *os.File) error {
		l.add("sync " + filepath.Base(f.Name()))
		return f.Sync()
	}
	if steps {
		s.compactStep = l.add
	}
}

// notSynced returns the ids whose file was not fsynced before the first
// event step ("" for: at all); all of them if step never came.
func (l *syncLog) notSynced(ids []string, step string) []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	end := len(l.events)
	if step != "" {
		end = slices.Index(l.events, step)
		if end < 0 {
			return ids
		}
	}
	var missing []string
	for _, id := range ids {
		if !slices.Contains(l.events[:end], "sync "+id) {
			missing = append(missing, id)
		}
	}
	return missing
}

// TestRecoveryFlushesInline: after a crash the file of a message
// committed inline may be in the page cache only, or written again by
// recovery: recovery fsyncs every one of them before its new log, which
// no longer carries their bytes, becomes the log.
func TestRecoveryFlushesInline(t *testing.T) {
	dir := t.TempDir()
	s1 := openT(t, dir, Options{})
	var ids []string
	for i := range 3 {
		ids = append(ids, commit(t, s1, message(fmt.Sprint("m", i), 5000), &Envelope{From: "a@b.test"}).ID())
	}
	os.Remove(s1.MessagePath(ids[0])) // lost in the crash: written again
	die(t, s1)

	s2 := newSpool(dir, Options{})
	var l syncLog
	l.hook(s2, true)
	if err := s2.open(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s2.Close() })
	if missing := l.notSynced(ids, "renamed"); len(missing) > 0 {
		t.Errorf("recovery's new log became the log before %v were fsynced; events: %v", missing, l.events)
	}
}

// TestInlineDuringCompaction: messages committed inline while a
// compaction is written are carried into the new log as inline records
// (the compaction's snapshot did not flush their files), stay known as
// such, and the next compaction fsyncs them before it drops their bytes.
func TestInlineDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var l syncLog
	l.hook(s, false)
	before := []string{commit(t, s, message("before", 5000), &Envelope{From: "a@b.test"}).ID()}
	held := holdCompaction(s)
	s.logMu.Lock()
	s.startCompact()
	s.logMu.Unlock()
	<-held.written
	var during []string
	for i := range 3 {
		during = append(during, commit(t, s, message(fmt.Sprint("during", i), 5000), &Envelope{From: "a@b.test"}).ID())
	}
	held.finish(t)
	s.compactStep = nil
	if missing := l.notSynced(before, ""); len(missing) > 0 {
		t.Errorf("the compaction did not fsync %v, committed inline before it", missing)
	}
	if missing := l.notSynced(during, ""); len(missing) == 0 {
		t.Fatal("the compaction fsynced messages committed after its snapshot: the test does not test")
	}
	s.logMu.Lock()
	for _, id := range during {
		if _, ok := s.x.inline[id]; !ok {
			t.Errorf("%s, committed inline during the compaction, is not known as inline after it", id)
		}
	}
	s.compactStep = l.add
	err := s.compact()
	s.logMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	if missing := l.notSynced(during, "renamed"); len(missing) > 0 {
		t.Errorf("the next compaction did not fsync %v before its log, without their bytes, became the log; events: %v", missing, l.events)
	}
	x, err := replayFile(filepath.Join(dir, logName))
	if err != nil || len(x.inline) != 0 {
		t.Errorf("log after the second compaction: %d inline records, %v; want none", len(x.inline), err)
	}
}

// die stands for a kill -9 of the process that has s open: the kernel
// drops its lock and nothing more reaches the directory. (The test's
// cleanup still stops its goroutines; with the log failed, its Close
// writes nothing.)
func die(t *testing.T, s *Spool) {
	t.Helper()
	s.logMu.Lock()
	s.logErr = errors.New("the process died")
	s.logMu.Unlock()
	s.lock.Close()
}
