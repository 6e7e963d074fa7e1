package spool

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

const crashChildEnv = "SPOOL_CRASH_CHILD_DIR"

// crashMessage is the content the child commits as message n, so that the
// parent can check every byte.
func crashMessage(n int) []byte { return message("crash "+strconv.Itoa(n), 1000+n*37%9000) }

// TestKill9 runs a child process that commits messages from several
// goroutines, updates or removes some, and prints each ID once the call
// has returned; it kills the child with SIGKILL mid-stream and checks that
// every printed commit, update and note survived, and every printed
// removal.
func TestKill9(t *testing.T) {
	if dir := os.Getenv(crashChildEnv); dir != "" {
		crashChild(dir)
		return
	}
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^TestKill9$", "-test.count=1")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+dir)
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	committed := map[string]int{}
	// A removal cut short by the kill may or may not have happened.
	updated, noted, removing, removed := map[string]bool{}, map[string]bool{}, map[string]bool{}, map[string]bool{}
	sc := bufio.NewScanner(out)
	killed := false
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		switch {
		case len(f) == 3 && f[0] == "committed":
			committed[f[1]], _ = strconv.Atoi(f[2])
		case len(f) == 2 && f[0] == "updated":
			updated[f[1]] = true
		case len(f) == 2 && f[0] == "noted":
			noted[f[1]] = true
		case len(f) == 2 && f[0] == "removing":
			removing[f[1]] = true
		case len(f) == 2 && f[0] == "removed":
			removed[f[1]] = true
		}
		if len(committed) == 300 && !killed {
			cmd.Process.Kill() // SIGKILL; lines already in the pipe are still read
			killed = true
		}
	}
	cmd.Wait()
	if !killed {
		t.Fatalf("child ended after %d commits without being killed", len(committed))
	}

	s := openT(t, dir, Options{})
	envs, err := s.List()
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]*Envelope{}
	for _, env := range envs {
		listed[env.ID] = env
		m, err := s.OpenMessage(env.ID)
		got := readAll(t, m, err)
		if int64(len(got)) != env.Size {
			t.Errorf("%s: %d bytes on disk, envelope says %d", env.ID, len(got), env.Size)
		}
	}
	for id, n := range committed {
		env := listed[id]
		switch {
		case removed[id] && env != nil:
			t.Errorf("message %s was removed but is listed", id)
		case removed[id]:
		case env == nil && !removing[id]:
			t.Errorf("message %s was committed but is lost", id)
		case env == nil: // its removal was cut short
		case updated[id] && !env.Held:
			t.Errorf("message %s: update lost", id)
		case noted[id] && env.Rcpts[0].Status != Delivered:
			t.Errorf("message %s: note lost", id)
		default:
			m, err := s.OpenMessage(id)
			if got := readAll(t, m, err); !bytes.Equal(got, crashMessage(n)) {
				t.Errorf("message %s: content differs", id)
			}
		}
	}
	// Messages in flight at the kill are either committed (Commit was about
	// to return) or gone; nothing uncommitted is left.
	if got := names(t, s.msgDir); len(got) != len(envs) {
		t.Errorf("%d message files for %d envelopes", len(got), len(envs))
	}
	t.Logf("%d commits, %d updates, %d notes, %d removals printed; %d listed after kill -9", len(committed), len(updated), len(noted), len(removed), len(envs))
}

// crashChild commits messages until it is killed, or exits after a while
// so that a lost parent does not leave it running.
func crashChild(dir string) {
	s, err := Open(dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	// The parent kills it after 300 commits; the limit, far beyond what
	// those take on a loaded machine, only ends a child whose parent is
	// gone.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var (
		mu   sync.Mutex
		next int
		wg   sync.WaitGroup
	)
	say := func(format string, args ...any) {
		mu.Lock()
		fmt.Printf(format, args...)
		mu.Unlock()
	}
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				mu.Lock()
				n := next
				next++
				mu.Unlock()
				w, err := s.Create()
				if err != nil {
					fmt.Fprintln(os.Stderr, err)
					os.Exit(2)
				}
				w.Write(crashMessage(n))
				env := &Envelope{From: "a@example.test", Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}
				if err := w.Commit(ctx, env); err != nil {
					return
				}
				say("committed %s %d\n", w.ID(), n)
				switch {
				case n%5 == 0:
					say("removing %s\n", env.ID)
					if err := s.Remove(env.ID); err != nil {
						return
					}
					say("removed %s\n", env.ID)
				case n%3 == 0:
					env.Held = true
					if err := s.Update(env); err != nil {
						return
					}
					say("updated %s\n", env.ID)
					fallthrough
				case n%2 == 0:
					// A note is written, not flushed: a kill -9 keeps it.
					if err := s.Note(env.ID, Progress{Rcpts: []Outcome{{Rcpt: 0, Status: Delivered}}}); err != nil {
						return
					}
					say("noted %s\n", env.ID)
				}
			}
		})
	}
	wg.Wait()
	os.Exit(3)
}
