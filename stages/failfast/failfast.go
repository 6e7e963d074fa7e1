// Package failfast keeps whether an engine that a node shares with
// others answers, so that no caller waits for a timeout while it is
// known to be away: the cluster's Redis (stages/redisconn) and its
// PostgreSQL (state/sqlstore). After an operation finds the engine
// unreachable (refused, reset, timed out), the operations of the next
// Retry fail at once; then one operation at a time tries it again,
// until one gets an answer. The first failure and the first answer
// after it are logged.
package failfast

import (
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// Config is what a Gate says of its engine.
type Config struct {
	// Down wraps the error of an operation refused while the engine is
	// away (redisconn.ErrDown, state.ErrUnavailable).
	Down error
	// Retry is how long operations fail at once after one found the
	// engine away, before one may try it again.
	Retry time.Duration
	// Log hears Away (a warning, with the error) when the engine is
	// found away and Back (with what it was) when it answers again; nil
	// logs nothing.
	Log        *slog.Logger
	Away, Back string
}

// Gate is the state of one engine. It is safe for concurrent use.
type Gate struct {
	c Config

	mu      sync.Mutex
	err     error     // nil while the engine answers, or before it was tried
	since   time.Time // while err is set: when the engine was found away
	up      time.Time // while err is nil: since when it answers; zero before its first answer
	retryAt time.Time // while err is set: when one operation may try again
	probing uint64    // while err is set: the probe trying, by number; 0 for none
	probes  uint64    // probes admitted so far: the number of the last
}

// New returns the Gate of an engine not tried yet.
func New(c Config) *Gate {
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return &Gate{c: c}
}

// Admit says whether an operation may go to the engine now: always while
// it answers; while it does not, one at a time once Retry has passed, and
// that one is the probe (probe is its number, 0 for an operation that is
// not one). An operation admitted must be told to Settle, with probe as
// Admit returned it.
func (g *Gate) Admit() (probe uint64, err error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		return 0, nil
	}
	if g.probing != 0 || time.Now().Before(g.retryAt) {
		return 0, fmt.Errorf("%w: %v", g.c.Down, g.err)
	}
	g.probes++
	g.probing = g.probes
	return g.probing, nil
}

// Settle records how an operation fared: whether the engine answered
// it, or was found unreachable (err says why); neither, for one its
// caller cancelled or that failed before asking. probe is what Admit
// said of the operation (0 for one not admitted by Admit): only the end
// of the probe under way lets another operation probe, so that
// operations admitted earlier (before the engine went away, or probes of
// an outage that ended), ending during the outage, do not let several
// probes run at once. It reports whether the engine was found away while
// it was known to be away already.
func (g *Gate) Settle(probe uint64, err error, answered, down bool) (stillDown bool) {
	g.mu.Lock()
	was := g.err
	if probe != 0 && probe == g.probing {
		g.probing = 0
	}
	switch {
	case down:
		if was == nil {
			g.since = time.Now()
		}
		g.err, g.retryAt = err, time.Now().Add(g.c.Retry)
	case answered:
		if was != nil || g.up.IsZero() {
			g.up = time.Now()
		}
		g.err, g.probing = nil, 0 // up: nothing to probe
	}
	g.mu.Unlock()
	switch {
	case down && was == nil:
		g.c.Log.Warn(g.c.Away, "err", err)
	case answered && was != nil:
		g.c.Log.Info(g.c.Back, "was", was.Error())
	}
	return down && was != nil
}

// Err is nil while the engine answers (or was not tried yet), and the
// error that found it unreachable otherwise.
func (g *Gate) Err() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.err
}

// DownSince is when the engine was found unreachable, while Err is not
// nil; zero otherwise.
func (g *Gate) DownSince() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err == nil {
		return time.Time{}
	}
	return g.since
}

// UpSince is since when the engine answers, while Err is nil; zero
// before its first answer and while it is away.
func (g *Gate) UpSince() time.Time {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.err != nil {
		return time.Time{}
	}
	return g.up
}
