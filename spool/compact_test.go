package spool

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// prefill writes n committed messages straight into dir, as a log and
// message files, so that a test gets a large live set without n commits.
func prefill(t *testing.T, dir string, n int) []string {
	t.Helper()
	for _, d := range []string{"msg", "tmp"} {
		if err := os.MkdirAll(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	var ids idGen
	gen := uint64(99)
	b := logHeader(gen)
	all := make([]string, n)
	rcpts := strings.Repeat(`{"addr":"someone@example.test","status":"pending","last_reply":"451 4.7.1 greylisted, try again later"},`, 8)
	for i := range all {
		id := ids.next(time.Now())
		all[i] = id
		js := fmt.Sprintf(`{"id":%q,"from":"a@example.test","rcpts":[%s{"addr":"b@example.test","status":"pending"}],"size":3}`, id, rcpts)
		b = appendRecord(b, gen, uint64(i)+1, uint64(i)+1, opCommit, id, []byte(js), nil)
		if err := os.WriteFile(filepath.Join(dir, "msg", id), []byte("x\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, logName), b, 0o600); err != nil {
		t.Fatal(err)
	}
	return all
}

// A compaction of a large live set does not stall commits: the snapshot
// is written and flushed without logMu, and commits wait only for the
// swap. The compaction is held once its snapshot is written, before the
// swap; commits made until then must complete. (Before, a commit waited
// for the whole compaction: 20k envelopes, compaction 51-221 ms, longest
// commit 52-272 ms.)
func TestCompactionDoesNotStallCommits(t *testing.T) {
	dir := t.TempDir()
	prefilled := prefill(t, dir, 20000)
	s := openT(t, dir, Options{})
	commit(t, s, []byte("Subject: x\r\n\r\nbefore\r\n"), &Envelope{})
	held := holdCompaction(s)
	// during commits a message within a bound: a commit that waited for
	// the held compaction would run into it, far beyond what any commit
	// takes on a loaded machine.
	var acked []string
	during := func() {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		w, err := s.Create()
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("Subject: x\r\n\r\nduring\r\n"))
		if err := w.Commit(ctx, &Envelope{From: "a@example.test"}); err != nil {
			t.Fatalf("commit during a compaction: %v", err)
		}
		acked = append(acked, w.ID())
	}

	// The committer is idle: nothing is flushing while the snapshot is
	// taken, as when the committer starts a compaction itself.
	start := time.Now()
	s.logMu.Lock()
	s.startCompact()
	s.logMu.Unlock()
	for {
		during()
		select {
		case <-held.written:
		default:
			continue
		}
		break
	}
	took := time.Since(start)
	for range 3 {
		during()
	}
	held.finish(t)
	t.Logf("snapshot of %d envelopes written in %v; %d commits meanwhile", len(prefilled), took, len(acked))
	s.logMu.Lock()
	records := s.x.records
	s.logMu.Unlock()
	if want := len(prefilled) + 1 + len(acked); records != want {
		t.Errorf("%d records after the compaction, want %d", records, want)
	}

	s.compactStep = nil // Close compacts the inline commits once more
	s.Close()
	s2 := openT(t, dir, Options{})
	got := map[string]bool{}
	for _, id := range listIDs(t, s2) {
		got[id] = true
	}
	for _, id := range append(prefilled, acked...) {
		if !got[id] {
			t.Fatalf("acknowledged %s lost after reopen", id)
		}
	}
	if len(got) != len(prefilled)+1+len(acked) {
		t.Errorf("listed %d after reopen, want %d", len(got), len(prefilled)+1+len(acked))
	}
}

// A crash at any step of a compaction, while commits, updates and
// removes go on, leaves a spool that recovers everything acknowledged.
// Each crash is an image of the directory taken at that step; at the
// rename, both outcomes (on disk or not) are tried.
func TestCrashAtEachCompactionStep(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	s.logMu.Lock()
	s.compactMin, s.nextCompact = 50, 50
	s.logMu.Unlock()

	var (
		mu      sync.Mutex
		attempt = map[string]int{}  // ID → Attempts last acknowledged
		gone    = map[string]bool{} // being removed: may be there or not
		acks    int
	)
	acked := func() (map[string]int, map[string]bool, int) {
		mu.Lock()
		defer mu.Unlock()
		return maps.Clone(attempt), maps.Clone(gone), acks
	}
	type image struct {
		step    string
		dir     string
		attempt map[string]int
		gone    map[string]bool
	}
	var images []image
	take := func(step string, edit func(dir string)) {
		a, _, _ := acked()
		img := image{step: step, dir: t.TempDir(), attempt: a}
		// The log before the messages: a message acknowledged before
		// the image has its file on disk before its record.
		copyFile(t, filepath.Join(dir, logName), filepath.Join(img.dir, logName))
		for _, sub := range []string{"tmp", "msg"} {
			if err := os.Mkdir(filepath.Join(img.dir, sub), 0o700); err != nil {
				t.Error(err)
			}
			ns, err := readNames(filepath.Join(dir, sub))
			if err != nil {
				t.Error(err)
			}
			for _, n := range ns {
				copyFile(t, filepath.Join(dir, sub, n), filepath.Join(img.dir, sub, n))
			}
		}
		// A removal that started before the image ends may have taken
		// the message file.
		_, img.gone, _ = acked()
		if edit != nil {
			edit(img.dir)
		}
		images = append(images, img)
	}
	renamed := func(d string) {
		if err := os.Rename(filepath.Join(d, "tmp", logName), filepath.Join(d, logName)); err != nil {
			t.Error(err)
		}
	}
	cutTmp := func(d string) {
		p := filepath.Join(d, "tmp", logName)
		st, err := os.Stat(p)
		if err == nil {
			err = os.Truncate(p, st.Size()/2)
		}
		if err != nil {
			t.Error(err)
		}
	}
	// The steps of one compaction run in order, on the background
	// goroutine and then on the committer; only the first is imaged.
	var imaging atomic.Bool
	imaging.Store(true)
	finished := make(chan struct{})
	s.compactStep = func(step string) {
		if !imaging.Load() {
			return
		}
		switch step {
		case "written":
			// Let the old log grow past the snapshot, so that there is
			// a tail to carry over.
			_, _, n := acked()
			for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
				if _, _, m := acked(); m >= n+30 {
					break
				}
			}
			take("written", nil)
			take("written, tmp cut short", cutTmp)
		case "tail":
			take("tail", nil)
		case "synced":
			take("synced", nil)
			take("synced and renamed", renamed)
		case "renamed":
			take("renamed", nil)
			imaging.Store(false)
			close(finished)
		}
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				env := &Envelope{From: fmt.Sprint(g)}
				w, err := s.Create()
				if err != nil {
					t.Error(err)
					return
				}
				w.Write(message(fmt.Sprint(g, i), 300))
				if err := w.Commit(context.Background(), env); err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				attempt[env.ID], acks = 0, acks+1
				mu.Unlock()
				// Updates make the dead records that start compactions.
				for a := 1; a <= 6; a++ {
					env.Attempts = a
					if err := s.Update(env); err != nil {
						t.Error(err)
						return
					}
					mu.Lock()
					attempt[env.ID], acks = a, acks+1
					mu.Unlock()
				}
				if i%2 == 0 {
					mu.Lock()
					gone[env.ID] = true
					mu.Unlock()
					if err := s.Remove(env.ID); err != nil {
						t.Error(err)
						return
					}
				}
			}
		})
	}
	select {
	case <-finished:
	case <-time.After(time.Minute):
		t.Error("no compaction within a minute")
	}
	close(stop)
	wg.Wait()
	s.Close()

	steps := []string{}
	for _, img := range images {
		steps = append(steps, img.step)
		s2, err := Open(img.dir)
		if err != nil {
			t.Errorf("crash at %s: %v", img.step, err)
			continue
		}
		envs, err := s2.List()
		if err != nil {
			t.Fatal(err)
		}
		listed := map[string]int{}
		for _, env := range envs {
			listed[env.ID] = env.Attempts
		}
		for id, a := range img.attempt {
			got, ok := listed[id]
			switch {
			case img.gone[id]:
			case !ok:
				t.Errorf("crash at %s: acknowledged %s lost", img.step, id)
			case got < a:
				t.Errorf("crash at %s: %s has attempts %d, acknowledged %d", img.step, id, got, a)
			}
		}
		t.Logf("crash at %s: %d acknowledged, %d recovered", img.step, len(img.attempt), len(envs))
		s2.Close()
	}
	want := []string{"written", "written, tmp cut short", "tail", "synced", "synced and renamed", "renamed"}
	if !slices.Equal(steps, want) {
		t.Errorf("crash images at %q, want %q", steps, want)
	}
}

func copyFile(t *testing.T, from, to string) {
	t.Helper()
	b, err := os.ReadFile(from)
	if errors.Is(err, fs.ErrNotExist) {
		return // a message removed meanwhile
	}
	if err != nil {
		t.Error(err)
		return
	}
	if err := os.WriteFile(to, b, 0o600); err != nil {
		t.Error(err)
	}
}

// heldCompaction is a compaction of a test's spool held once its
// snapshot is written (holdCompaction).
type heldCompaction struct {
	written, release, swapped chan struct{}
}

// holdCompaction makes the next compaction of s stop once its new log is
// written: written is closed then, and the swap waits for finish.
func holdCompaction(s *Spool) *heldCompaction {
	h := &heldCompaction{make(chan struct{}), make(chan struct{}), make(chan struct{})}
	s.compactStep = func(step string) {
		switch step {
		case "written":
			close(h.written)
			<-h.release
		case "renamed":
			close(h.swapped)
		}
	}
	return h
}

// finish lets the held compaction swap its log in and waits for it.
func (h *heldCompaction) finish(t *testing.T) {
	t.Helper()
	close(h.release)
	select {
	case <-h.swapped:
	case <-time.After(30 * time.Second):
		t.Fatal("the compaction did not finish")
	}
}
