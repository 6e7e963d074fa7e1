package main

import (
	"strings"
	"testing"
	"time"
)

func TestSinkCounter(t *testing.T) {
	// What smtp-sink -c prints: counters separated by CR.
	out := "sess=0 quit=0 mesg=1\rsess=0 quit=0 mesg=2\rsess=1 quit=1 mesg=2\rsess=2 quit=2 mesg=17\r"
	s := &sink{done: make(chan struct{})}
	s.read(strings.NewReader(out))
	n, last := s.received()
	if n != 17 || last.IsZero() {
		t.Errorf("received = %d at %v, want 17", n, last)
	}
	// waitFor returns the count when it is reached, or when it stalls.
	if got, _ := s.waitFor(t.Context(), 17, time.Second); got != 17 {
		t.Errorf("waitFor(17) = %d", got)
	}
	start := time.Now()
	if got, _ := s.waitFor(t.Context(), 20, 200*time.Millisecond); got != 17 || time.Since(start) > 5*time.Second {
		t.Errorf("waitFor(20) = %d after %v, want 17 after the stall", got, time.Since(start))
	}
}
