package spool

import (
	"bytes"
	"os"
	"path/filepath"
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
	s1.lock.Close() // the process dies

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
