package smtpd

import (
	"context"
	"io"
	"net"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/stages"
)

// session is go-smtp's side of a connection: it hands each command to the
// driver and answers with the driver's reply.
type session struct {
	srv  *Server
	gen  *generation // the config it runs under, from start to end
	conn *smtp.Conn
	dc   *Conn

	// go-smtp runs Data in a goroutine of its own for BDAT, and calls
	// Reset or Logout from the connection's goroutine while it runs (RSET
	// or a disconnect between chunks). mu orders them.
	mu      sync.Mutex
	cur     *txn // the transaction in progress
	running int  // Data calls that have not returned
	closed  bool // Logout was called; the last Data to end releases gen
}

// txn is a transaction of the session. Data works on the txn it started
// with, never on what the session holds later.
type txn struct {
	*Txn
	inData bool // under session.mu: Data took it, and only Data ends it
}

// NewSession implements smtp.Backend. go-smtp calls it at the first
// HELO/EHLO; the driver runs the connect and helo phases.
func (s *Server) NewSession(c *smtp.Conn) (smtp.Session, error) {
	if !s.greeted(door.Of(c.Conn())) {
		return nil, errEarlyTalker // closed: go-smtp cannot write it
	}
	client := stages.Client{Addr: door.RemoteAddr(c.Conn()), Helo: c.Hostname()}
	if ta, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		client.Port = uint16(ta.Port)
	}
	if st, ok := c.TLSConnectionState(); ok {
		client.TLS = tlsDescription(st.Version, st.CipherSuite)
	} else {
		client.TLS = clean(door.ProxiedTLS(c.Conn()), "()") // the client's TLS with a proxy
	}
	s.opts.Metrics.sessions.Inc()
	sess := &session{srv: s, gen: s.acquire(), conn: c}
	sess.dc = sess.gen.Connect(client, func() (context.Context, func()) { return door.WhileConnected(c.Conn()) })
	return sess, nil
}

// Mail implements smtp.Session: MAIL FROM starts a transaction.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.drop()
	t, o := s.dc.Mail(from, opts.UTF8)
	if t == nil {
		return o.Reply
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.cur = &txn{Txn: t}
	}
	s.mu.Unlock()
	if closed {
		// The connection went away under us.
		t.Abort()
		return errLocal
	}
	return nil
}

// Rcpt implements smtp.Session.
func (s *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.mu.Lock()
	t := s.cur
	s.mu.Unlock()
	if t == nil {
		return errLocal // Logout came first
	}
	if o := t.Rcpt(to); o.Reply != nil {
		return o.Reply
	}
	return nil // go-smtp's own 250
}

// Data implements smtp.Session; the driver takes the message (Txn.Data).
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	t := s.cur
	if t != nil {
		t.inData = true
		s.running++
	}
	s.mu.Unlock()
	if t == nil {
		return errLocal // Logout came first
	}
	defer func() {
		s.mu.Lock()
		s.running--
		release := s.closed && s.running == 0
		s.mu.Unlock()
		if release {
			s.srv.release(s.gen)
		}
	}()
	// Reading: a slow but moving client is not cut off, a stalled one is
	// (data_timeout), and so is one that takes too long in all
	// (data_total_timeout, from the DATA or first BDAT command on).
	if lc := door.Of(s.conn.Conn()); lc != nil {
		cfg := &s.gen.opts.Config.Server
		lc.Reading(time.Duration(cfg.DataTimeout), time.Now().Add(time.Duration(cfg.DataTotalTimeout)))
		defer lc.Reading(0, time.Time{})
	}
	return t.Data(r).Reply
}

// Reset implements smtp.Session (RSET, a new EHLO, the end of DATA). A
// BDAT transaction's Data may still run then; go-smtp has closed its
// pipe, so it returns soon and ends the transaction itself.
func (s *session) Reset() { s.drop() }

// Logout implements smtp.Session; go-smtp calls it once, when the
// connection closes or STARTTLS starts a new session. A Data still
// running (BDAT) keeps the session's config until it returns.
func (s *session) Logout() error {
	s.mu.Lock()
	s.closed = true
	busy := s.running > 0
	s.mu.Unlock()
	// No wait: Server.Close calls Logout of one connection after the
	// other, and a Data in the data stage may take filter_timeout.
	s.drop()
	if !busy {
		s.srv.release(s.gen)
	}
	return nil
}

// drop ends the transaction in progress. One that Data works on is only
// abandoned: Data ends it, as only Data may touch its writer, and Commit
// and Abort must not race. A BDAT transaction's Data runs in a goroutine
// of go-smtp's and may outlive the transaction; it answers on a result
// channel of its own (go-smtp patch 2, PATCHES.md), so the next
// transaction need not wait for it.
func (s *session) drop() {
	s.mu.Lock()
	t := s.cur
	s.cur = nil
	running := t != nil && t.inData
	s.mu.Unlock()
	switch {
	case running:
		t.Abandon()
	case t != nil:
		t.Abort()
	}
}
