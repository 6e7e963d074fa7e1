package door

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"sync"
	"time"
)

// Listener takes connections under its Limits and hands each to the
// server as a *Conn. A connection over the limits gets Refusal and is
// closed before the server sees it, so that a flood from one address
// cannot starve other clients.
type Listener struct {
	net.Listener
	Limits  *Limits
	Refusal string // the line a client over the limits gets, CRLF included
	// Refused, if set, is told of each client refused, and which limit.
	Refused func(c net.Conn, limit string)
	// Greet, if set, runs on each connection before the server's first
	// write, its greeting: a server such as go-smtp writes its banner
	// first thing and has no hook before it. An error fails that write
	// and every later one (the pre-greet test).
	Greet func(*Conn) error
}

// Accept returns the next connection within the limits.
func (l *Listener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		a := RemoteAddr(c)
		if ok, why := l.Limits.Acquire(a); !ok {
			if l.Refused != nil {
				l.Refused(c, why)
			}
			go func() {
				c.SetDeadline(time.Now().Add(5 * time.Second))
				io.WriteString(c, l.Refusal)
				c.Close()
			}()
			continue
		}
		return &Conn{Conn: c, release: func() { l.Limits.Release(a) }, greet: l.Greet}, nil
	}
}

// Conn is a connection a Listener took. Besides giving back its slot at
// Close, it runs the Listener's Greet, watches the client for commands
// sent before their reply (Watch), and bounds the time a message may
// take to read (Reading).
type Conn struct {
	net.Conn
	once    sync.Once
	release func()

	greet     func(*Conn) error
	greetOnce sync.Once
	greetErr  error
	// watching is set while the client's commands are watched (Watch);
	// pipelined once a read brought bytes past the end of a command
	// line: the client did not wait for the reply. Used by the
	// connection's goroutine only.
	watching, pipelined bool

	// While a message is read (Reading), every read that brings bytes
	// moves the read deadline idle ahead, and no read deadline, whoever
	// sets it, goes past until.
	mu    sync.Mutex
	idle  time.Duration
	until time.Time
}

// Of returns the Conn under c, which may be wrapped in TLS; nil when c
// did not come from a Listener.
func Of(c net.Conn) *Conn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*Conn)
	return lc
}

// NetConn is the connection c wraps.
func (c *Conn) NetConn() net.Conn { return c.Conn }

func (c *Conn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

func (c *Conn) Write(p []byte) (int, error) {
	if c.greet != nil {
		c.greetOnce.Do(func() { c.greetErr = c.greet(c) })
	}
	if c.greetErr != nil {
		return 0, c.greetErr
	}
	return c.Conn.Write(p)
}

func (c *Conn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if c.watching && n > 0 {
		if i := bytes.IndexByte(p[:n], '\n'); i >= 0 && i < n-1 {
			c.pipelined = true
		}
	}
	if n > 0 {
		c.mu.Lock()
		if c.idle > 0 {
			c.Conn.SetReadDeadline(c.capped(time.Now().Add(c.idle)))
		}
		c.mu.Unlock()
	}
	return n, err
}

// Watch starts watching the client's commands: a read that brings bytes
// past the end of a line means it sent a command before the reply to the
// one before.
func (c *Conn) Watch() { c.watching = true }

// Watched ends the watch, if one was started (on a nil c, none was), and
// reports whether the client sent a command before its reply, or has
// bytes waiting now.
func (c *Conn) Watched() (watched, pipelined bool) {
	if c == nil || !c.watching {
		return false, false
	}
	c.watching = false
	return true, c.pipelined || Readable(c)
}

func (c *Conn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.Conn.SetReadDeadline(c.capped(t))
}

func (c *Conn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetReadDeadline(c.capped(t))
}

// capped is read deadline t, no later than until. Under mu.
func (c *Conn) capped(t time.Time) time.Time {
	if !c.until.IsZero() && (t.IsZero() || t.After(c.until)) {
		return c.until
	}
	return t
}

// Reading starts reading a message: each read that brings bytes moves
// the read deadline idle ahead, and no read deadline goes past until. A
// zero idle ends it.
func (c *Conn) Reading(idle time.Duration, until time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.idle, c.until = idle, until
	if idle > 0 {
		c.Conn.SetReadDeadline(c.capped(time.Now().Add(idle)))
	}
}
