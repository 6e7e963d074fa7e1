package ratelimit

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"
)

// fakeClock is the clock of the tests: it moves only when told, either way.
type fakeClock struct{ t time.Time }

func newClock() *fakeClock { return &fakeClock{t: time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *fakeClock) Now() time.Time           { return c.t }
func (c *fakeClock) Add(d time.Duration)      { c.t = c.t.Add(d) }
func (c *fakeClock) nanos() int64             { return c.t.UnixNano() }
func (c *fakeClock) Set(t time.Time)          { c.t = t }
func (c *fakeClock) at(d time.Duration) int64 { return c.t.Add(d).UnixNano() }

// TestLimitTake runs one key through steps: move the clock (forward or
// back), then take an event, which passes or not.
func TestLimitTake(t *testing.T) {
	type step struct {
		move time.Duration
		want bool
	}
	pass, fail := true, false
	burst := func(n int, want bool) []step {
		var s []step
		for range n {
			s = append(s, step{0, want})
		}
		return s
	}
	cat := func(parts ...[]step) []step {
		var s []step
		for _, p := range parts {
			s = append(s, p...)
		}
		return s
	}
	for _, tc := range []struct {
		name  string
		limit Limit
		steps []step
	}{
		{"a burst at once, then none", Limit{time.Minute, 5}, cat(burst(5, pass), burst(3, fail))},
		{"one per interval once the burst is spent", Limit{time.Minute, 5}, cat(burst(5, pass),
			[]step{{59 * time.Second, fail}, {time.Second, pass}, {0, fail}, {time.Minute, pass}})},
		{"the burst refills at the rate", Limit{time.Minute, 5}, cat(burst(5, pass),
			[]step{{3 * time.Minute, pass}}, burst(2, pass), burst(1, fail))},
		{"a long pause makes the burst whole, never more", Limit{time.Minute, 5}, cat(burst(5, pass),
			[]step{{24 * time.Hour, pass}}, burst(4, pass), burst(1, fail))},
		{"burst 1", Limit{time.Second, 1}, []step{{0, pass}, {0, fail}, {999 * time.Millisecond, fail}, {time.Millisecond, pass}}},
		{"clock back an hour after a spent burst: one interval's wait, not an hour", Limit{time.Minute, 5}, cat(burst(5, pass),
			[]step{{-time.Hour, fail}, {59 * time.Second, fail}, {time.Second, pass}, {0, fail}})},
		// What was spent "in the future" cannot be told apart from a
		// spent burst: the key is taken as having spent it, and waits
		// one interval.
		{"clock back on a key with burst left: one interval's wait at most", Limit{time.Minute, 5}, cat(burst(2, pass),
			[]step{{-time.Hour, fail}, {time.Minute, pass}, {0, fail}})},
		{"clock back then forward again: the burst whole, not more", Limit{time.Minute, 3}, cat(burst(3, pass),
			[]step{{-24 * time.Hour, fail}, {24 * time.Hour, pass}}, burst(2, pass), burst(1, fail))},
		{"clock forward: the burst is whole", Limit{time.Hour, 2}, cat(burst(2, pass), []step{{365 * 24 * time.Hour, pass}}, burst(1, pass), burst(1, fail))},
		{"a huge burst over a long period does not overflow", Limit{24 * time.Hour, math.MaxInt}, burst(1000, pass)},
		{"a zero limit is one event per nanosecond, burst 1", Limit{}, []step{{0, pass}, {0, fail}, {time.Nanosecond, pass}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClock()
			var tat int64
			for i, s := range tc.steps {
				c.Add(s.move)
				next, ok := tc.limit.Take(tat, c.nanos())
				if ok != s.want {
					t.Fatalf("step %d (moved %v): passed %v, want %v", i, s.move, ok, s.want)
				}
				if !ok && next > c.at(time.Duration(max(tc.limit.Burst, 1))*max(tc.limit.Interval, 1)) && tc.limit.Burst < 1000 {
					t.Fatalf("step %d: TAT %v ahead of now, more than the burst", i, time.Duration(next-c.nanos()))
				}
				tat = next
			}
		})
	}
}

func TestNewLimit(t *testing.T) {
	for _, tc := range []struct {
		rate  int
		per   time.Duration
		burst int
		want  Limit
	}{
		{100, time.Hour, 100, Limit{36 * time.Second, 100}},
		{5, time.Second, 1, Limit{200 * time.Millisecond, 1}},
		{3, time.Nanosecond, 3, Limit{time.Nanosecond, 3}}, // never below 1ns
		{0, time.Hour, 0, Limit{time.Hour, 1}},
	} {
		if got := NewLimit(tc.rate, tc.per, tc.burst); got != tc.want {
			t.Errorf("NewLimit(%d, %v, %d) = %+v, want %+v", tc.rate, tc.per, tc.burst, got, tc.want)
		}
	}
}

// TestLimitHoldsInEveryWindow: under events at random times, every
// window of length w passes at most Burst + w/Interval of them (rounded
// up), and a client that keeps asking is not starved: it gets at least
// w/Interval - 1 in each.
func TestLimitHoldsInEveryWindow(t *testing.T) {
	l := Limit{Interval: time.Second, Burst: 5}
	rng := rand.New(rand.NewPCG(1, 2))
	c := newClock()
	var tat int64
	var passed []int64
	for range 20000 {
		c.Add(time.Duration(rng.IntN(400)) * time.Millisecond)
		var ok bool
		if tat, ok = l.Take(tat, c.nanos()); ok {
			passed = append(passed, c.nanos())
		}
	}
	const w = 10 * time.Second
	most := l.Burst + int(w/l.Interval) + 1
	for i := range passed {
		n := 0
		for j := i; j < len(passed) && passed[j]-passed[i] < int64(w); j++ {
			n++
		}
		if n > most {
			t.Fatalf("%d events passed in the %v from %d, want at most %d", n, w, i, most)
		}
		if end := passed[i] + int64(w); end <= passed[len(passed)-1] && n < int(w/l.Interval)-1 {
			t.Fatalf("only %d events passed in the %v from %d though the client kept asking", n, w, i)
		}
	}
}
