package router

import (
	"testing"
	"time"
)

func TestBackoff(t *testing.T) {
	lo, hi := time.Minute, time.Hour
	for _, tc := range []struct {
		n    int
		base time.Duration
	}{
		{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute},
		{7, time.Hour}, {100, time.Hour},
	} {
		for range 20 {
			got := backoff(tc.n, lo, hi)
			if got < tc.base || got > tc.base+tc.base/10 {
				t.Fatalf("backoff(%d) = %v, want %v plus at most 10%%", tc.n, got, tc.base)
			}
		}
	}
}
