package ratelimit

import (
	"bytes"
	"context"
	"testing"
	"time"
)

// FuzzStateFile: whatever bytes the state file holds, reading it never
// panics, takes all of it or nothing, and what it takes is written back
// the same.
func FuzzStateFile(f *testing.F) {
	now := newClock().Now()
	tab := NewTable(0)
	for _, v := range []string{"a", "b", "c"} {
		tab.Take(context.Background(), KeyOf("r", v), Limit{time.Hour, 2}, now)
	}
	good := tab.encode(now.UnixNano())
	f.Add(good)
	f.Add(good[:len(good)-1])
	f.Add([]byte(formatLine))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		tab := NewTable(0)
		err := tab.decode(b, now.UnixNano())
		if err != nil {
			if tab.Len() != 0 {
				t.Fatalf("%d keys taken from a file refused: %v", tab.Len(), err)
			}
			return
		}
		again := NewTable(0)
		if err := again.decode(tab.encode(now.UnixNano()), now.UnixNano()); err != nil || again.Len() != tab.Len() {
			t.Fatalf("written back: %d keys of %d, %v", again.Len(), tab.Len(), err)
		}
		if !bytes.HasPrefix(b, []byte(formatLine)) {
			t.Fatal("took a file without the format line")
		}
	})
}
