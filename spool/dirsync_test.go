package spool

import (
	"context"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// waitDurable waits until the background fsync of msg/ has covered w's
// file.
func waitDurable(t *testing.T, s *Spool, w *Writer) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); s.dirDurable.Load() < w.entry; {
		if time.Now().After(deadline) {
			t.Fatal("msg/ not fsynced 10 s after the file was created")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDirSyncAhead: the directory entry of a message file too large to
// commit inline is made durable while the message arrives, and its
// commit then waits for no fsync of msg/ of its own; a message whose
// entry is not covered yet gets one. A small message asks for none.
func TestDirSyncAhead(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	var syncs atomic.Int32
	s.fsyncMsgDir = func() error { syncs.Add(1); return s.msgDirF.Sync() }
	env := func() *Envelope {
		return &Envelope{From: "a@b.test", Rcpts: []Recipient{{Addr: "c@d.test", Status: Pending}}}
	}

	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	small, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	small.Write([]byte("Subject: small\r\n\r\nbody\r\n"))
	if err := small.Commit(context.Background(), env()); err != nil {
		t.Fatal(err)
	}
	if got := syncs.Load(); got != 0 {
		t.Errorf("an inline message took %d fsyncs of msg/", got)
	}
	w.Write(message("ahead", inlineMax+1))
	waitDurable(t, s, w)
	before := syncs.Load()
	if err := w.Commit(context.Background(), env()); err != nil {
		t.Fatal(err)
	}
	if got := syncs.Load() - before; got != 0 {
		t.Errorf("the commit of a message whose entry was durable fsynced msg/ %d times", got)
	}

	// An entry no fsync has covered: the committer makes one.
	w2, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w2.Write(message("behind", inlineMax+1)) // not inline: its file must be durable
	waitDurable(t, s, w2)                    // the background loop has taken its wake-up
	// An entry made since, as a rewrite's rename makes, without waking
	// the background loop: only the committer can cover it.
	w2.entry = s.entries.Add(1)
	before = syncs.Load()
	if err := w2.Commit(context.Background(), env()); err != nil {
		t.Fatal(err)
	}
	if syncs.Load() == before {
		t.Error("a message whose entry was not durable was committed without an fsync of msg/")
	}
	if s.dirDurable.Load() < w2.entry {
		t.Error("the committer's fsync did not record what it covered")
	}
}

// TestDirSyncFails: once an fsync of msg/ has failed, in the background or
// in the committer, no commit is acknowledged, even if a later fsync
// succeeds (the failed one's writes may be lost for good), and Err says
// why.
func TestDirSyncFails(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	var fail atomic.Bool
	fail.Store(true)
	s.fsyncMsgDir = func() error {
		if fail.Swap(false) {
			return syscall.EIO
		}
		return s.msgDirF.Sync()
	}
	for i := range 2 {
		w, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		// The first one's file must be durable; the second, inline, needs
		// no fsync of msg/ but is refused too: the disk is in doubt.
		size := inlineMax + 1
		if i == 1 {
			size = 100
		}
		w.Write(message("x", size))
		if err := w.Commit(context.Background(), &Envelope{From: "a@b.test", Rcpts: []Recipient{{Addr: "c@d.test", Status: Pending}}}); err == nil {
			t.Fatalf("commit %d acknowledged after a failed fsync of msg/", i+1)
		}
	}
	if s.Err() == nil {
		t.Error("Err is nil after a failed fsync of msg/")
	}
}
