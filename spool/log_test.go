package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
)

func appendFile(t *testing.T, path string, b []byte) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(b); err != nil {
		t.Fatal(err)
	}
}

// A crash in the middle of an append leaves part of a record at the end
// of the log: it was never acknowledged, so replay ignores it. A torn
// update leaves the old envelope; a torn commit leaves a message file
// that recovery removes.
func TestTornTail(t *testing.T) {
	for _, cut := range []int{1, recHeaderLen - 1, recHeaderLen + 10, -1} {
		t.Run(fmt.Sprint(cut), func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			env := &Envelope{From: "a@example.test", Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}
			kept := commit(t, s, []byte("kept\r\n"), env)
			torn, err := s.Create()
			if err != nil {
				t.Fatal(err)
			}
			torn.Write([]byte("torn\r\n"))
			torn.Flush()
			// The records a crash cut short: an update of kept and the
			// commit of torn, in one append.
			newer := *env
			newer.Held = true
			js, _ := encodeT(t, &newer)
			s.logMu.Lock()
			rec := appendRecord(nil, s.gen, s.seq, s.durable, opUpdate, kept.ID(), js, nil)
			rec = appendRecord(rec, s.gen, s.seq+1, s.durable, opCommit, torn.ID(), []byte(`{"id":"`+torn.ID()+`"}`), nil)
			s.logMu.Unlock()
			if cut < 0 { // whole update, torn commit
				cut = len(rec) - 3
			}
			s.lock.Close() // the process dies
			appendFile(t, filepath.Join(dir, logName), rec[:cut])

			s2 := openT(t, dir, Options{})
			got, err := s2.Load(kept.ID())
			if err != nil {
				t.Fatal(err)
			}
			if wantHeld := cut > len(rec)/2; got.Held != wantHeld {
				t.Errorf("Held = %v after a torn log cut at %d of %d bytes", got.Held, cut, len(rec))
			}
			if ids := listIDs(t, s2); !slices.Equal(ids, []string{kept.ID()}) {
				t.Errorf("listed %v, want only %s", ids, kept.ID())
			}
			if _, err := os.Stat(torn.Path()); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("message of the torn commit: %v, want removed", err)
			}
			// The log goes on after the tear, and what is appended now
			// survives the next restart.
			after := commit(t, s2, []byte("after\r\n"), &Envelope{})
			s2.Close()
			if ids := listIDs(t, openT(t, dir, Options{})); !slices.Equal(ids, []string{kept.ID(), after.ID()}) {
				t.Errorf("after reopen listed %v, want %s %s", ids, kept.ID(), after.ID())
			}
		})
	}
}

func encodeT(t *testing.T, env *Envelope) ([]byte, error) {
	t.Helper()
	var s Spool
	js, err := s.encode(env)
	if err != nil {
		t.Fatal(err)
	}
	return js, nil
}

// A record that cannot be read but was durable, as a later record says,
// is damage, not a crash: Open refuses and removes nothing.
func TestDamagedLog(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var ids []string
	for range 3 {
		ids = append(ids, commit(t, s, []byte("x\r\n"), &Envelope{}).ID())
	}
	s.Close()
	path := filepath.Join(dir, logName)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, []byte(ids[1]))
	b[i] ^= 0xff
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	if s, err := Open(dir); err == nil || !strings.Contains(err.Error(), "damaged") {
		if err == nil {
			s.Close()
		}
		t.Fatalf("Open of a damaged log = %v", err)
	}
	if got := names(t, filepath.Join(dir, "msg")); !slices.Equal(got, ids) {
		t.Errorf("msg/ = %v after a refused recovery, want %v", got, ids)
	}
}

// Compaction runs between group commits while many goroutines commit,
// update and remove, and another lists the spool throughout. What they
// were told is what a restart finds.
func TestCompactionUnderLoad(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	s.logMu.Lock()
	s.compactMin, s.nextCompact = 20, 20
	firstGen := s.gen
	s.logMu.Unlock()

	var (
		mu   sync.Mutex
		want = map[string]int{} // ID → Attempts of the last update
		wg   sync.WaitGroup
	)
	stop := make(chan struct{})
	var readerWG sync.WaitGroup
	readerWG.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.List(); err != nil {
				t.Errorf("List: %v", err)
				return
			}
		}
	})
	for g := range 16 {
		wg.Go(func() {
			for i := range 30 {
				env := &Envelope{From: fmt.Sprint(g)}
				w, err := s.Create()
				if err != nil {
					t.Error(err)
					return
				}
				w.Write(message(fmt.Sprint(g, i), 500))
				if err := w.Commit(context.Background(), env); err != nil {
					t.Error(err)
					return
				}
				env.Attempts = i
				if err := s.Update(env); err != nil {
					t.Error(err)
					return
				}
				if i%3 != 0 {
					if err := s.Remove(env.ID); err != nil {
						t.Error(err)
					}
					continue
				}
				mu.Lock()
				want[env.ID] = i
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	close(stop)
	readerWG.Wait()

	s.logMu.Lock()
	compacted := s.gen != firstGen
	s.logMu.Unlock()
	if !compacted {
		t.Error("the log was never compacted")
	}
	check := func(who string, sp *Spool) {
		t.Helper()
		envs, err := sp.List()
		if err != nil {
			t.Fatal(err)
		}
		if len(envs) != len(want) {
			t.Errorf("%s: listed %d, want %d", who, len(envs), len(want))
		}
		for _, env := range envs {
			if a, ok := want[env.ID]; !ok || a != env.Attempts {
				t.Errorf("%s: %s with attempts %d; want %v %d", who, env.ID, env.Attempts, ok, a)
			}
		}
	}
	check("writer", s)
	s.Close()
	check("after reopen", openT(t, dir, Options{}))
}

// A crash during a compaction leaves part of the new log in tmp/; the
// old one is whole and recovery goes on from it.
func TestCrashDuringCompaction(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	env := &Envelope{From: "a@example.test"}
	c := commit(t, s, []byte("x\r\n"), env)
	env.Attempts = 7
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	s.logMu.Lock()
	partial := logHeader(12345)
	partial = appendRecord(partial, 12345, 1, 2, opCommit, c.ID(), []byte(`{"id":"`+c.ID()+`","attempts":1}`), nil)
	s.logMu.Unlock()
	if err := os.WriteFile(filepath.Join(dir, "tmp", logName), partial[:len(partial)-5], 0o600); err != nil {
		t.Fatal(err)
	}
	s.lock.Close() // the process dies

	s2 := openT(t, dir, Options{})
	got, err := s2.Load(c.ID())
	if err != nil || got.Attempts != 7 {
		t.Fatalf("after a crash mid-compaction: %+v, %v; want attempts 7", got, err)
	}
	if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ after recovery: %v", n)
	}
}

// Many updates of few messages make a long log; compaction keeps it
// short, and a reopen finds the last envelope of each.
func TestReopenAfterManyUpdates(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	s.logMu.Lock()
	s.compactMin, s.nextCompact = 1024, 1024
	s.logMu.Unlock()
	envs := make([]*Envelope, 3)
	for i := range envs {
		envs[i] = &Envelope{From: fmt.Sprint(i), Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}
		commit(t, s, []byte("x\r\n"), envs[i])
	}
	for n := range 3000 {
		env := envs[n%3]
		env.Attempts = n
		env.Rcpts[0].LastReply = fmt.Sprintf("451 try %d", n)
		if err := s.Update(env); err != nil {
			t.Fatal(err)
		}
	}
	s.logMu.Lock()
	records := s.x.records
	s.logMu.Unlock()
	if records > 1024+3 {
		t.Errorf("log of %d records after 3000 updates of 3 envelopes: not compacted", records)
	}
	s.Close()
	s2 := openT(t, dir, Options{})
	for _, want := range envs {
		got, err := s2.Load(want.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Attempts != want.Attempts || got.Rcpts[0].LastReply != want.Rcpts[0].LastReply {
			t.Errorf("%s after reopen: attempts %d %q, want %d %q", want.ID, got.Attempts, got.Rcpts[0].LastReply, want.Attempts, want.Rcpts[0].LastReply)
		}
	}
	// Open compacts: only the live records are left.
	x, err := replayFile(filepath.Join(dir, logName))
	if err != nil || x.records != 3 {
		t.Errorf("log after reopen: %d records, %v; want 3", x.records, err)
	}
}

// A compaction whose directory sync fails has already put the new log in
// place: the spool must not go on appending to the old, nameless file —
// what it acknowledged then would be gone after a restart. It refuses to
// commit instead, and what it acknowledged before is all there.
func TestCompactionDirSyncFails(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var ids []string
	for range 5 {
		ids = append(ids, commit(t, s, []byte("Subject: x\r\n\r\nbody\r\n"), &Envelope{From: "a@b.test", Rcpts: []Recipient{{Addr: "c@d.test", Status: Pending}}}).ID())
	}
	s.logMu.Lock()
	s.syncDir = func(d string) error {
		if d == dir { // the rename's; msg/'s, for the inline commits, goes through
			return syscall.EIO
		}
		return nil
	}
	err := s.compact()
	s.logMu.Unlock()
	if err == nil {
		t.Fatal("compact with a failing directory sync succeeded")
	}
	if s.Err() == nil {
		t.Fatal("Err() is nil after a failed compaction sync")
	}
	w, err := s.Create()
	if err == nil {
		w.Write([]byte("Subject: y\r\n\r\nlate\r\n"))
		if err = w.Commit(context.Background(), &Envelope{From: "a@b.test", Rcpts: []Recipient{{Addr: "c@d.test", Status: Pending}}}); err == nil {
			t.Fatal("a commit after the failed sync was acknowledged")
		}
	}
	s.Close()
	s2 := openT(t, dir, Options{})
	for _, id := range ids {
		if _, err := s2.Load(id); err != nil {
			t.Errorf("acknowledged %s lost: %v", id, err)
		}
	}
}
