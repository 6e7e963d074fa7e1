package router

import (
	"context"
	"sync"
	"time"
)

// destKey names a destination of the connection pool: connections made
// with different TLS settings are not interchangeable.
type destKey struct {
	addr       string // what is dialed
	name       string // TLS server name
	tls        string
	skipVerify bool
}

// pool keeps idle connections per destination for reuse across messages
// and caps the connections open to one destination.
type pool struct {
	max         int
	idleTimeout time.Duration

	mu    sync.Mutex
	dests map[destKey]*dest
}

func newPool(max int, idleTimeout time.Duration) *pool {
	return &pool{max: max, idleTimeout: idleTimeout, dests: make(map[destKey]*dest)}
}

// dest is one destination: a token in slots for every open connection,
// busy or idle.
type dest struct {
	slots chan struct{}
	idle  chan *conn
	users int // deliveries holding the dest; under pool.mu
}

// dest returns the destination for k; the caller calls done when it is
// through with it.
func (p *pool) dest(k destKey) *dest {
	p.mu.Lock()
	defer p.mu.Unlock()
	d := p.dests[k]
	if d == nil {
		d = &dest{slots: make(chan struct{}, p.max), idle: make(chan *conn, p.max)}
		p.dests[k] = d
	}
	d.users++
	return d
}

func (p *pool) done(d *dest) {
	p.mu.Lock()
	d.users--
	p.mu.Unlock()
}

// acquire returns an idle connection, or nil with a slot reserved for a
// new connection: the caller dials, then calls put or drop, or release if
// the dial failed. It waits while the destination is at its cap.
func (p *pool) acquire(ctx context.Context, d *dest) (*conn, error) {
	for {
		var c *conn
		select {
		case c = <-d.idle:
		default:
			select {
			case c = <-d.idle:
			case d.slots <- struct{}{}:
				return nil, nil
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		if time.Since(c.idleSince) < p.idleTimeout {
			return c, nil
		}
		p.drop(d, c)
	}
}

// put returns a healthy connection for reuse.
func (p *pool) put(d *dest, c *conn) {
	c.idleSince = time.Now()
	d.idle <- c // never blocks: idle holds at most max connections
}

// drop closes a connection and frees its slot.
func (p *pool) drop(d *dest, c *conn) {
	c.close()
	p.release(d)
}

// release frees a slot reserved by acquire for a dial that failed.
func (p *pool) release(d *dest) { <-d.slots }

// sweep closes the connections idle for idleTimeout or longer, or all
// idle connections when all is true, and forgets destinations without
// connections and users (MX delivery meets many).
func (p *pool) sweep(all bool) {
	p.mu.Lock()
	dests := make([]*dest, 0, len(p.dests))
	for _, d := range p.dests {
		dests = append(dests, d)
	}
	p.mu.Unlock()
	for _, d := range dests {
		for range len(d.idle) {
			var c *conn
			select {
			case c = <-d.idle:
			default:
			}
			if c == nil {
				break
			}
			if !all && time.Since(c.idleSince) < p.idleTimeout {
				d.idle <- c
				continue
			}
			p.drop(d, c)
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, d := range p.dests {
		if d.users == 0 && len(d.slots) == 0 {
			delete(p.dests, k)
		}
	}
}
