package milter

import (
	"slices"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages"
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

// pool keeps sessions for later transactions, so that a busy gateway does
// not open a milter connection per message. A session is kept in one of
// two states:
//
//   - fresh: it ended with SMFIC_QUIT_NC and takes any client's
//     SMFIC_CONNECT, without a new connection or option negotiation;
//   - bound: it is still in one SMTP client's connection, as far as the
//     milter knows, and takes that client's next transaction from
//     SMFIC_MAIL on, as a milter sees several messages per connection
//     from Postfix.
//
// libmilter accepts SMFIC_QUIT_NC only after a message that ended with
// continue; after accept (what opendkim answers when it signs) it ignores
// it, and only a bound session can be reused.
type pool struct {
	max  int
	idle time.Duration

	mu     sync.Mutex
	free   []idleSession // oldest first
	closed bool
}

type idleSession struct {
	s      *session
	since  time.Time
	client *stages.Client // the client a bound session belongs to; nil if fresh
}

// get returns a session bound to client, else a fresh one, else nil; bound
// reports which. Sessions idle too long are closed.
func (p *pool) get(client stages.Client) (s *session, bound bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.expire()
	k := slices.IndexFunc(p.free, func(is idleSession) bool { return is.client != nil && *is.client == client })
	if k < 0 {
		// The most recently used fresh session: the likeliest alive.
		for i := len(p.free) - 1; i >= 0 && k < 0; i-- {
			if p.free[i].client == nil {
				k = i
			}
		}
	}
	if k < 0 {
		return nil, false
	}
	is := p.free[k]
	p.free = slices.Delete(p.free, k, k+1)
	return is.s, is.client != nil
}

// put keeps s, bound to client if not nil, making room by closing the
// oldest idle session if the pool is full. A closed pool closes s.
func (p *pool) put(s *session, client *stages.Client) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		s.nc.Close()
		return
	}
	p.expire()
	if len(p.free) >= p.max {
		p.free[0].s.nc.Close()
		p.free = p.free[1:]
	}
	p.free = append(p.free, idleSession{s, time.Now(), client})
}

// expire closes sessions idle too long. The milter sees its connection
// close, as at the end of an SMTP session.
func (p *pool) expire() {
	now := time.Now()
	p.free = slices.DeleteFunc(p.free, func(is idleSession) bool {
		if now.Sub(is.since) < p.idle {
			return false
		}
		is.s.nc.Close()
		return true
	})
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
