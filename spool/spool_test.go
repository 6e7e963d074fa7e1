package spool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func openT(t testing.TB, dir string, opts Options) *Spool {
	t.Helper()
	s, err := OpenWith(dir, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// names lists a spool subdirectory.
func names(t *testing.T, dir string) []string {
	t.Helper()
	n, err := readNames(dir)
	if err != nil {
		t.Fatal(err)
	}
	slices.Sort(n)
	return n
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// listIDs is the IDs s lists.
func listIDs(t *testing.T, s *Spool) []string {
	t.Helper()
	envs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, env := range envs {
		ids = append(ids, env.ID)
	}
	return ids
}

func readAll(t *testing.T, r io.ReadCloser, err error) []byte {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// message returns distinct, checkable message bytes of about size bytes.
func message(tag string, size int) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "Subject: %s\r\n\r\n", tag)
	for b.Len() < size {
		fmt.Fprintf(&b, "%s line %d\r\n", tag, b.Len())
	}
	return b.Bytes()
}

func commit(t *testing.T, s *Spool, msg []byte, env *Envelope) *Writer {
	t.Helper()
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(msg); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return w
}

func TestRoundTrip(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	msg := message("round trip", 3*bufSize+17) // more than the buffer holds

	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if !ValidID(w.ID()) {
		t.Fatalf("ID %q is not valid", w.ID())
	}
	for chunk := range slices.Chunk(msg, 1000) {
		if n, err := w.Write(chunk); err != nil || n != len(chunk) {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if w.Size() != int64(len(msg)) {
		t.Errorf("Size = %d, want %d", w.Size(), len(msg))
	}
	r, err := w.Open()
	if got := readAll(t, r, err); !bytes.Equal(got, msg) {
		t.Errorf("Writer.Open read %d bytes, want the %d written", len(got), len(msg))
	}
	if got, err := os.ReadFile(w.Path()); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("reading Path: %d bytes, %v", len(got), err)
	}
	if envs, _ := s.List(); len(envs) != 0 {
		t.Errorf("uncommitted message listed: %+v", envs[0])
	}

	received := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	env := &Envelope{
		From:       "a@example.test",
		Rcpts:      []Recipient{{Addr: "b@example.test", Status: Pending}},
		Received:   received,
		ClientAddr: "192.0.2.1",
	}
	if err := w.Commit(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	if env.ID != w.ID() || env.Size != int64(len(msg)) {
		t.Errorf("Commit set ID %q Size %d, want %q %d", env.ID, env.Size, w.ID(), len(msg))
	}
	if _, err := w.Write([]byte("x")); err == nil {
		t.Error("Write after Commit succeeded")
	}

	envs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != 1 || envs[0].ID != w.ID() || envs[0].From != env.From ||
		!envs[0].Received.Equal(received) || envs[0].Rcpts[0] != env.Rcpts[0] ||
		envs[0].Size != int64(len(msg)) {
		t.Fatalf("List = %+v, want the one committed", envs)
	}
	loaded, err := s.Load(w.ID())
	if err != nil || loaded.ClientAddr != "192.0.2.1" {
		t.Errorf("Load = %+v, %v", loaded, err)
	}
	m, err := s.OpenMessage(w.ID())
	if got := readAll(t, m, err); !bytes.Equal(got, msg) {
		t.Errorf("OpenMessage read %d bytes, want %d", len(got), len(msg))
	}
	if s.MessagePath(w.ID()) != w.Path() {
		t.Errorf("MessagePath %q != Writer.Path %q", s.MessagePath(w.ID()), w.Path())
	}
	if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ not empty after commit: %v", n)
	}

	if err := s.Remove(w.ID()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Load(w.ID()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Remove: %v, want not exist", err)
	}
	if err := s.Remove(w.ID()); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("second Remove: %v, want not exist", err)
	}
	if n := names(t, filepath.Join(dir, "msg")); len(n) != 0 {
		t.Errorf("msg/ not empty after Remove: %v", n)
	}
}

func TestReceivedDefault(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	before := time.Now()
	env := &Envelope{From: "a@example.test"}
	commit(t, s, []byte("x\r\n"), env)
	if env.Received.Before(before) || env.Received.After(time.Now()) {
		t.Errorf("Received = %v, want the time of Commit", env.Received)
	}
}

func TestInvalidIDs(t *testing.T) {
	s := openT(t, t.TempDir(), Options{})
	for _, id := range []string{"", "../../etc/passwd", "0123456789abcdef", "0123456789ABCDEW", "0123456789ABCDE"} {
		if ValidID(id) {
			t.Errorf("ValidID(%q) = true", id)
		}
		if _, err := s.Load(id); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Load(%q) = %v, want not exist", id, err)
		}
		if _, err := s.OpenMessage(id); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("OpenMessage(%q) = %v, want not exist", id, err)
		}
		if err := s.Remove(id); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Remove(%q) = %v, want not exist", id, err)
		}
		if err := s.Update(&Envelope{ID: id}); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Update(%q) = %v, want not exist", id, err)
		}
	}
}

func TestIDsGrow(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	var ids []string
	for range 200 {
		w, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, w.ID())
		w.Abort()
	}
	w := commit(t, s, []byte("x"), &Envelope{})
	ids = append(ids, w.ID())
	s.Close()

	// A restart with the clock set back still gives higher IDs than the
	// messages on disk.
	s2 := openT(t, dir, Options{})
	s2.ids.ms -= 3600_000
	w2, err := s2.Create()
	if err != nil {
		t.Fatal(err)
	}
	ids = append(ids, w2.ID())
	if !slices.IsSorted(ids) || len(slices.Compact(slices.Clone(ids))) != len(ids) {
		t.Errorf("IDs not strictly increasing: %v", ids)
	}

	// The same millisecond, or a clock going back, still increments.
	var g idGen
	now := time.Now()
	a := g.next(now)
	b := g.next(now)
	c := g.next(now.Add(-time.Hour))
	d := g.next(now.Add(time.Millisecond))
	if !(a < b && b < c && c < d) {
		t.Errorf("IDs not increasing: %s %s %s %s", a, b, c, d)
	}
	if !ValidID(a) {
		t.Errorf("generated ID %q is not valid", a)
	}
}

func TestConcurrentCommits(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	const workers, each = 40, 5
	var (
		mu   sync.Mutex
		want = map[string][]byte{}
		wg   sync.WaitGroup
	)
	for g := range workers {
		wg.Go(func() {
			for i := range each {
				msg := message(fmt.Sprintf("worker %d message %d", g, i), 5000)
				w, err := s.Create()
				if err != nil {
					t.Error(err)
					return
				}
				w.Write(msg)
				if err := w.Commit(context.Background(), &Envelope{From: fmt.Sprint(g)}); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				want[w.ID()] = msg
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	s2 := openT(t, dir, Options{})
	envs, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(envs) != workers*each || len(want) != workers*each {
		t.Fatalf("listed %d, committed %d, want %d", len(envs), len(want), workers*each)
	}
	for _, env := range envs {
		m, err := s2.OpenMessage(env.ID)
		if got := readAll(t, m, err); !bytes.Equal(got, want[env.ID]) {
			t.Errorf("%s: content differs", env.ID)
		}
	}
}

func TestAbort(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write(message("aborted", 100_000))
	if err := w.Rewrite(func(src io.Reader, dst io.Writer) error {
		_, err := io.Copy(dst, src)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	r, err := w.Open() // a filter still reading does not keep files around
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := w.Abort(); err != nil {
		t.Fatal(err)
	}
	if err := w.Abort(); err != nil {
		t.Errorf("second Abort: %v", err)
	}
	if err := w.Commit(context.Background(), &Envelope{}); err == nil {
		t.Error("Commit after Abort succeeded")
	}
	for _, sub := range []string{"msg", "tmp"} {
		if n := names(t, filepath.Join(dir, sub)); len(n) != 0 {
			t.Errorf("%s/ after Abort: %v", sub, n)
		}
	}
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Errorf("listed after Abort: %v", ids)
	}
}

func TestRecovery(t *testing.T) {
	dir := t.TempDir()
	s1 := openT(t, dir, Options{})
	committed := message("committed", 10_000)
	c := commit(t, s1, committed, &Envelope{From: "a@example.test"})

	partial, err := s1.Create() // crash mid-DATA
	if err != nil {
		t.Fatal(err)
	}
	partial.Write(message("partial", 200_000))
	flushed, err := s1.Create() // crash during the data phase
	if err != nil {
		t.Fatal(err)
	}
	flushed.Write([]byte("Subject: x\r\n"))
	flushed.Flush()
	// A crash mid-Rewrite leaves a file in tmp/, and one during Remove an
	// envelope whose message is gone.
	os.WriteFile(filepath.Join(dir, "tmp", c.ID()+".msg.123"), []byte("Subject"), 0o600)
	// (Larger than inlineMax: the file of an inline commit comes back;
	// TestInlineRestored.)
	gone := commit(t, s1, message("gone", inlineMax+1), &Envelope{})
	os.Remove(s1.MessagePath(gone.ID()))

	// While s1 is open, nobody else can open the spool, and a refused
	// Open removes nothing.
	if s, err := Open(dir); err == nil {
		s.Close()
		t.Fatal("a second Open succeeded")
	}
	if _, err := os.Stat(partial.Path()); err != nil {
		t.Errorf("Open removed the message another process is writing: %v", err)
	}

	// The process dies: the kernel drops its lock, nothing else happens.
	s1.lock.Close()

	s3 := openT(t, dir, Options{})
	if got, want := listIDs(t, s3), []string{c.ID()}; !slices.Equal(got, want) {
		t.Fatalf("List after crash = %v, want %v", got, want)
	}
	m, err := s3.OpenMessage(c.ID())
	if got := readAll(t, m, err); !bytes.Equal(got, committed) {
		t.Error("committed message changed")
	}
	if got, want := names(t, filepath.Join(dir, "msg")), []string{c.ID()}; !slices.Equal(got, want) {
		t.Errorf("msg/ after recovery = %v, want %v", got, want)
	}
	if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ after recovery: %v", n)
	}
}

func TestUpdate(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	env := &Envelope{From: "a@example.test", Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}
	commit(t, s, []byte("x\r\n"), env)

	// Readers never see a torn envelope while it is replaced.
	stop := make(chan struct{})
	var readers sync.WaitGroup
	readers.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := s.Load(env.ID); err != nil {
				t.Errorf("Load during Update: %v", err)
				return
			}
		}
	})
	for i := range 50 {
		env.Attempts = i + 1
		env.Rcpts[0].LastReply = strings.Repeat("451 try later ", i)
		env.Held = i%2 == 0
		if err := s.Update(env); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	readers.Wait()
	s.Close()

	s2 := openT(t, dir, Options{})
	got, err := s2.Load(env.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Attempts != 50 || got.Held || got.Rcpts[0].LastReply != env.Rcpts[0].LastReply {
		t.Errorf("after reopen: %+v, want the last update", got)
	}
	if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
		t.Errorf("tmp/ after updates: %v", n)
	}

	if err := s2.Remove(env.ID); err != nil {
		t.Fatal(err)
	}
	if err := s2.Update(env); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Update after Remove = %v, want not exist", err)
	}
	s2.Close()
	if ids := listIDs(t, openT(t, dir, Options{})); len(ids) != 0 {
		t.Errorf("Update brought back a removed envelope: %v", ids)
	}
}

// TestNote: a note changes the recipients it names and nothing else,
// at once and after a reopen, survives a compaction, and yields
// to a later Update; a note of a removed message is refused.
func TestNote(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	env := &Envelope{From: "a@example.test", Rcpts: []Recipient{
		{Addr: "b@example.test", Status: Pending},
		{Addr: "c@example.test", Status: Pending, LastReply: "451 later"},
	}}
	commit(t, s, []byte("x\r\n"), env)
	env.Held = true
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if err := s.Note(env.ID, Progress{Rcpts: []Outcome{{Rcpt: 0, Status: Delivered, LastReply: "250 ok", LastHost: "mx:25", Updated: at}}}); err != nil {
		t.Fatal(err)
	}
	check := func(when string, got *Envelope, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", when, err)
		}
		want := []Recipient{
			{Addr: "b@example.test", Status: Delivered, LastReply: "250 ok", LastHost: "mx:25", Updated: at},
			{Addr: "c@example.test", Status: Pending, LastReply: "451 later"},
		}
		if !got.Held || fmt.Sprint(got.Rcpts) != fmt.Sprint(want) {
			t.Errorf("%s: %+v, want held and %+v", when, got, want)
		}
	}
	got, err := s.Load(env.ID)
	check("Load after Note", got, err)
	s.Close()
	s = openT(t, dir, Options{})
	got, err = s.Load(env.ID)
	check("Load after reopen", got, err)
	if err := s.compact(); err != nil {
		t.Fatal(err)
	}
	got, err = s.Load(env.ID)
	check("Load after compaction", got, err)

	if err := s.Note(env.ID, Progress{Rcpts: []Outcome{{Rcpt: 1, Status: Pending}}}); err == nil {
		t.Error("a note of a pending recipient was taken")
	}
	if err := s.Note(env.ID, Progress{Rcpts: []Outcome{{Rcpt: 2, Status: Delivered}}}); err == nil {
		t.Error("a note of recipient 2 of 2 was taken")
	}
	env.Rcpts[0].Status = Failed
	if err := s.Update(env); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(env.ID); err != nil || got.Rcpts[0].Status != Failed {
		t.Errorf("Update after Note: %+v, %v", got, err)
	}
	if err := s.Note(env.ID, Progress{DSNSent: true}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Load(env.ID); err != nil || !got.DSNSent || got.Rcpts[0].Status != Failed {
		t.Errorf("after a DSN note: %+v, %v", got, err)
	}
	if err := s.Remove(env.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Note(env.ID, Progress{DSNSent: true}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Note after Remove = %v, want not exist", err)
	}
	s.Close()
	if ids := listIDs(t, openT(t, dir, Options{})); len(ids) != 0 {
		t.Errorf("a note brought back a removed envelope: %v", ids)
	}
}

func TestUpdateFailureKeepsOld(t *testing.T) {
	var fail error
	s := openT(t, t.TempDir(), Options{FailWrites: func() error { return fail }})
	env := &Envelope{From: "a@example.test"}
	commit(t, s, []byte("x\r\n"), env)
	fail = syscall.ENOSPC
	env.Held = true
	if err := s.Update(env); !IsFull(err) {
		t.Fatalf("Update = %v, want a full disk", err)
	}
	got, err := s.Load(env.ID)
	if err != nil || got.Held {
		t.Errorf("after failed Update: %+v, %v; want the old envelope", got, err)
	}
}

func TestRewrite(t *testing.T) {
	for _, tt := range []struct {
		name    string
		size    int
		full    bool // every in-memory slot taken
		inPlace bool // the file stays the same
	}{
		{"in place", 3 * bufSize, false, true},
		{"too large for memory", inPlaceMax + bufSize, false, false},
		{"memory busy", 3 * bufSize, true, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			s := openT(t, dir, Options{})
			if tt.full {
				for range inPlaceSlots {
					s.inPlace <- struct{}{}
				}
			}
			w, err := s.Create()
			if err != nil {
				t.Fatal(err)
			}
			body := message("rewrite", tt.size)
			w.Write(body)
			w.Flush()
			before, err := os.Stat(w.Path())
			if err != nil {
				t.Fatal(err)
			}
			old, err := w.Open() // a reader from before the rewrite
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			addHeader := func(src io.Reader, dst io.Writer) error {
				io.WriteString(dst, "X-Spam-Score: 1.5\r\n")
				_, err := io.Copy(dst, src)
				return err
			}
			if err := w.Rewrite(addHeader); err != nil {
				t.Fatal(err)
			}
			want := append([]byte("X-Spam-Score: 1.5\r\n"), body...)
			if w.Size() != int64(len(want)) {
				t.Errorf("Size after Rewrite = %d, want %d", w.Size(), len(want))
			}
			r, err := w.Open()
			if got := readAll(t, r, err); !bytes.Equal(got, want) {
				t.Errorf("after Rewrite read %.40q…, want %.40q…", got, want)
			}
			after, err := os.Stat(w.Path())
			if err != nil {
				t.Fatal(err)
			}
			if same := os.SameFile(before, after); same != tt.inPlace {
				t.Errorf("same file after Rewrite: %v, want %v", same, tt.inPlace)
			}
			if !tt.inPlace {
				// The old file stays whole for whoever still reads it.
				if got := readAll(t, old, nil); !bytes.Equal(got, body) {
					t.Errorf("reader of the old file read %.40q…, want %.40q…", got, body)
				}
			}

			// A failing rewrite leaves the message as it was.
			boom := errors.New("filter failed")
			err = w.Rewrite(func(src io.Reader, dst io.Writer) error {
				io.WriteString(dst, "half")
				return boom
			})
			if !errors.Is(err, boom) {
				t.Errorf("Rewrite = %v, want %v", err, boom)
			}
			r, err = w.Open()
			if got := readAll(t, r, err); !bytes.Equal(got, want) {
				t.Error("failed Rewrite changed the message")
			}

			// Writes after a rewrite append to the new content.
			w.Write([]byte("tail\r\n"))
			want = append(want, "tail\r\n"...)
			env := &Envelope{}
			if err := w.Commit(context.Background(), env); err != nil {
				t.Fatal(err)
			}
			m, err := s.OpenMessage(env.ID)
			if got := readAll(t, m, err); !bytes.Equal(got, want) {
				t.Error("committed message is not the rewritten one")
			}
			if env.Size != int64(len(want)) {
				t.Errorf("env.Size = %d, want %d", env.Size, len(want))
			}
			if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
				t.Errorf("tmp/ after Rewrite: %v", n)
			}
		})
	}
}

// TestRewriteWriteFails: when the new content cannot be written in place,
// the old one may be damaged and Commit refuses the message; a new file
// that cannot be written leaves the old one to commit.
func TestRewriteWriteFails(t *testing.T) {
	for _, size := range []int{1000, inPlaceMax + 1} {
		dir := t.TempDir()
		var fail atomic.Bool
		s := openT(t, dir, Options{FailWrites: func() error {
			if fail.Load() {
				return syscall.ENOSPC
			}
			return nil
		}})
		w, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		w.Write(message("full", size))
		fail.Store(true)
		err = w.Rewrite(func(src io.Reader, dst io.Writer) error {
			_, err := io.Copy(dst, src)
			return err
		})
		if !IsFull(err) {
			t.Errorf("%d bytes: Rewrite = %v, want a full disk", size, err)
		}
		fail.Store(false)
		err = w.Commit(context.Background(), &Envelope{})
		if inPlace := size <= inPlaceMax; inPlace != (err != nil) {
			t.Errorf("%d bytes: Commit after the failed Rewrite = %v; want an error: %v", size, err, inPlace)
		}
		if n := names(t, filepath.Join(dir, "tmp")); len(n) != 0 {
			t.Errorf("%d bytes: tmp/ after a failed Rewrite: %v", size, n)
		}
	}
}

func TestFailWrites(t *testing.T) {
	dir := t.TempDir()
	var fail error
	s := openT(t, dir, Options{FailWrites: func() error { return fail }})

	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("Subject: x\r\n")); err != nil {
		t.Fatal(err)
	}
	fail = syscall.ENOSPC
	_, err = w.Write([]byte("more\r\n"))
	if !IsFull(err) || !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Write = %v, want ENOSPC", err)
	}
	if err := w.Commit(context.Background(), &Envelope{}); !IsFull(err) {
		t.Errorf("Commit after a failed Write = %v, want ENOSPC", err)
	}

	// The disk fills up between DATA and the commit.
	fail = nil
	w, err = s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("Subject: y\r\n"))
	fail = syscall.EDQUOT
	if err := w.Commit(context.Background(), &Envelope{}); !IsFull(err) || errors.Is(err, syscall.ENOSPC) {
		t.Errorf("Commit = %v, want EDQUOT", err)
	}

	fail = syscall.EIO
	w, err = s.Create()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte("x")); IsFull(err) || !errors.Is(err, syscall.EIO) {
		t.Errorf("Write = %v, want EIO that is not full", err)
	}
	w.Abort()

	for _, sub := range []string{"msg", "tmp"} {
		if n := names(t, filepath.Join(dir, sub)); len(n) != 0 {
			t.Errorf("%s/ after failed commits: %v", sub, n)
		}
	}
	if ids := listIDs(t, s); len(ids) != 0 {
		t.Errorf("listed after failed commits: %v", ids)
	}
	if IsFull(nil) {
		t.Error("IsFull(nil) = true")
	}
}

// TestCommitCanceled checks that a Commit that gave up never leaves a
// message behind, and one that returned nil always does.
func TestCommitCanceled(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w, _ := s.Create()
	w.Write([]byte("x"))
	if err := w.Commit(ctx, &Envelope{}); !errors.Is(err, context.Canceled) {
		t.Errorf("Commit with a canceled ctx = %v", err)
	}

	var (
		mu sync.Mutex
		ok []string
		wg sync.WaitGroup
	)
	for i := range 40 {
		wg.Go(func() {
			// Deadlines from 0 to 9 ms, around the time a flush takes;
			// every tenth commit has time enough.
			timeout := time.Duration(i%10) * time.Millisecond
			if i%10 == 9 {
				timeout = time.Minute
			}
			ctx, cancel := context.WithTimeout(context.Background(), timeout)
			defer cancel()
			w, err := s.Create()
			if err != nil {
				t.Error(err)
				return
			}
			w.Write(message("cancel", 5000))
			err = w.Commit(ctx, &Envelope{})
			if err != nil && (timeout == time.Minute || !errors.Is(err, context.DeadlineExceeded)) {
				t.Error(err)
			}
			if err == nil {
				mu.Lock()
				ok = append(ok, w.ID())
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	s.Close() // waits for the committer, which cleans up after those who left
	slices.Sort(ok)
	if got := names(t, filepath.Join(dir, "msg")); !slices.Equal(got, ok) {
		t.Errorf("msg/ = %v, want the %d successful commits %v", got, len(ok), ok)
	}
	if got := listIDs(t, openT(t, dir, Options{})); !slices.Equal(got, ok) {
		t.Errorf("listed %v, want the %d successful commits %v", got, len(ok), ok)
	}
	t.Logf("%d of 40 commits made it before their deadline", len(ok))
}

func TestClosed(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Create()
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("x"))
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background(), &Envelope{}); !errors.Is(err, ErrClosed) {
		t.Errorf("Commit after Close = %v, want ErrClosed", err)
	}
	if _, err := s.Create(); !errors.Is(err, ErrClosed) {
		t.Errorf("Create after Close = %v, want ErrClosed", err)
	}
	if n := names(t, filepath.Join(dir, "msg")); len(n) != 0 {
		t.Errorf("msg/ after a refused commit: %v", n)
	}
}
