package trace

import (
	"context"
	"errors"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"
)

// store is an Appender in memory that fails while told to.
type store struct {
	mu     sync.Mutex
	events []string // queue IDs, in the order appended
	down   bool
}

func (s *store) Append(_ context.Context, events ...Event) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.down {
		return errors.New("store down")
	}
	for _, e := range events {
		s.events = append(s.events, e.QueueID)
	}
	return nil
}

func (s *store) setDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

func (s *store) got() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// waitFor waits until s holds want.
func (s *store) waitFor(t *testing.T, want ...string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !slices.Equal(s.got(), want) {
		if time.Now().After(deadline) {
			t.Fatalf("shipped %v; want %v", s.got(), want)
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
	}
}

// TestShip: what a node writes to its trace files reaches the cluster's
// store once, in order: what was there before the first Ship is not sent
// (that is cluster import's), events written while the store fails wait
// and go when it is back, a restart resumes where the last Ship stopped,
// and an event written into yesterday's file (a session begun before
// midnight) is sent too.
func TestShip(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	today := time.Now().UTC()
	l.Record(Event{Time: today, QueueID: "BEFORE", Event: "connect"})

	st := &store{}
	start := func() (stop func()) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			Ship(ctx, dir, func() Appender { return st }, slog.New(slog.DiscardHandler))
		}()
		return func() { cancel(); <-done }
	}
	stop := start()
	// Ship has noted where the files end once it wrote its cursor.
	deadline := time.Now().Add(30 * time.Second)
	for s := (&shipper{dir: dir}); s.load() != nil; {
		if time.Now().After(deadline) {
			t.Fatal("no cursor written")
		}
		time.Sleep(10 * time.Millisecond) // polling a condition, bounded by deadline
	}
	l.Record(Event{Time: today, QueueID: "A", Event: "connect"})
	st.waitFor(t, "A")

	st.setDown(true)
	l.Record(Event{Time: today, QueueID: "B", Event: "connect"})
	l.Record(Event{Time: today.AddDate(0, 0, -1), QueueID: "YESTERDAY", Event: "connect"})
	stop()
	l.Record(Event{Time: today, QueueID: "C", Event: "data"})
	st.setDown(false)
	stop = start()
	defer stop()
	st.waitFor(t, "A", "YESTERDAY", "B", "C")
	l.Record(Event{Time: today, QueueID: "D", Event: "data"})
	st.waitFor(t, "A", "YESTERDAY", "B", "C", "D")
}
