// Package ratelimit holds the [[ratelimit]] rules to their rates. Rules
// (rules.go) says which rules an envelope event, a message at MAIL or a
// recipient at RCPT, counts against and under which key; Limit (gcra.go)
// decides, a pure function of a stored time and a clock; a Store keeps
// one time per key. The embedded Store is a Table in memory, bounded,
// saved under data_dir so that the limits survive a restart (File); a
// store shared by several gateways (Redis, for the cluster) implements
// the same Take. The state failing never stops mail: a check the store
// cannot answer passes (fail open), and a save that fails leaves the
// limits holding in memory; both are logged and counted.
//
// The gateway's transaction driver (gateway/smtpd) runs the checks, so
// that `mailgate test` meets them as a client would.
package ratelimit

import (
	"math"
	"time"
)

// Limit is a rate with a burst, held by the generic cell rate algorithm
// (GCRA, ITU-T I.371, in its virtual scheduling form): each event moves a
// key's theoretical arrival time (TAT) one Interval later, and passes
// while the TAT stays within Burst intervals of now. So Burst events pass
// at once, then one per Interval: in any window of length w, at most
// Burst + w/Interval. It is a token bucket of Burst tokens refilled one
// per Interval, kept as one number per key.
type Limit struct {
	Interval time.Duration // at least 1ns
	Burst    int           // at least 1
}

// NewLimit is the Limit of rate events per period with a burst.
func NewLimit(rate int, per time.Duration, burst int) Limit {
	return Limit{Interval: max(per/time.Duration(max(rate, 1)), 1), Burst: max(burst, 1)}
}

// Take decides one event at now for a key whose TAT is tat (0 when the
// key has none) and returns whether it passes and the key's TAT after it.
// Times are Unix nanoseconds of the caller's clock: Take reads none.
//
// A TAT more than Burst intervals ahead of now cannot come from Take at
// the same clock: the clock went back. It is taken as Burst intervals
// ahead, so the key waits one Interval at most (as with a spent burst),
// never for the clock to catch up. A clock that jumps forward only makes
// the key's burst whole again sooner.
func (l Limit) Take(tat, now int64) (next int64, ok bool) {
	iv := max(int64(l.Interval), 1)
	limit := addSat(now, mulSat(iv, int64(max(l.Burst, 1))))
	tat = min(max(tat, now), limit)
	if next = addSat(tat, iv); next > limit {
		return tat, false
	}
	return next, true
}

// addSat and mulSat saturate at the largest time, where a limit of a
// huge burst over a long period would overflow.
func addSat(a, b int64) int64 {
	if b > 0 && a > math.MaxInt64-b {
		return math.MaxInt64
	}
	return a + b
}

func mulSat(a, b int64) int64 {
	if a > 0 && b > math.MaxInt64/a {
		return math.MaxInt64
	}
	return a * b
}
