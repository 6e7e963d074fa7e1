package milter

import (
	"sync"
	"time"
)

const (
	// maxIdle bounds the connections kept open for reuse. More run at
	// once under load; the ones beyond maxIdle are closed when done.
	maxIdle = 16
	// idleTimeout closes a connection unused for this long, well before
	// libmilter's own idle timeout (7210s by default) would.
	idleTimeout = 30 * time.Second

	// circuitThreshold consecutive failures open the circuit: the milter
	// is then not asked, and default_action applies at once, until
	// circuitRetry has passed and one message tries it again.
	circuitThreshold = 3
	circuitRetry     = 10 * time.Second
)

// pool keeps sessions that ended with SMFIC_QUIT_NC, ready for the next
// SMTP transaction's SMFIC_CONNECT without a new connection and option
// negotiation.
type pool struct {
	max  int
	idle time.Duration

	mu     sync.Mutex
	free   []idleSession // most recently used last
	closed bool
}

type idleSession struct {
	s     *session
	since time.Time
}

// get returns an idle session, or nil. Sessions idle too long are closed.
func (p *pool) get() *session {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := time.Now()
	for len(p.free) > 0 {
		last := p.free[len(p.free)-1]
		p.free = p.free[:len(p.free)-1]
		if now.Sub(last.since) < p.idle {
			return last.s
		}
		last.s.nc.Close()
	}
	return nil
}

// put keeps s for reuse, or closes it when the pool is full or closed.
func (p *pool) put(s *session) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed || len(p.free) >= p.max {
		s.nc.Close()
		return
	}
	// The oldest idle sessions are at the front; drop those expired so a
	// quiet period does not keep dead connections around.
	now := time.Now()
	for len(p.free) > 0 && now.Sub(p.free[0].since) >= p.idle {
		p.free[0].s.nc.Close()
		p.free = p.free[1:]
	}
	p.free = append(p.free, idleSession{s, now})
}

// close closes every idle session; sessions put later are closed too.
func (p *pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closed = true
	for _, is := range p.free {
		is.s.nc.Close()
	}
	p.free = nil
}

// circuit stops asking a milter that keeps failing, so that messages do
// not each wait for a connect timeout while it is down, and lets one
// message probe it after a pause.
type circuit struct {
	threshold int
	retry     time.Duration

	mu       sync.Mutex
	failures int       // consecutive
	openAt   time.Time // zero while closed
	probing  bool      // a probe is under way while open
}

// allow reports whether the milter may be asked now. While the circuit is
// open, it lets one caller through once retry has passed since it opened
// or since the last probe failed.
func (c *circuit) allow() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.openAt.IsZero() {
		return true
	}
	if c.probing || time.Since(c.openAt) < c.retry {
		return false
	}
	c.probing = true
	return true
}

// success closes the circuit; it reports whether it was open.
func (c *circuit) success() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	wasOpen := !c.openAt.IsZero()
	c.failures, c.openAt, c.probing = 0, time.Time{}, false
	return wasOpen
}

// failure counts a failure; it reports whether the circuit opened now.
func (c *circuit) failure() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.failures++
	if !c.openAt.IsZero() {
		// The probe failed: wait another retry period.
		c.openAt, c.probing = time.Now(), false
		return false
	}
	if c.failures >= c.threshold {
		c.openAt = time.Now()
		return true
	}
	return false
}
