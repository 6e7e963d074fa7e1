package router

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"strings"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/stages/address"
)

// TLS modes of a route (policy.Route.TLS).
const (
	tlsOpportunistic = "opportunistic"
	tlsRequired      = "required"
	tlsNone          = "none"
)

// conn is one SMTP connection to a next hop.
type conn struct {
	c         *smtp.Client
	nc        net.Conn // under c: deadlines, and closing it aborts c
	idleSince time.Time
	// cutOff is set when a message broke off in the middle of DATA: the
	// connection must be closed without another word.
	cutOff bool
}

// close ends the session politely if the server still listens. After a
// message was cut off it only drops the connection: the next command
// would first end the message with "." (go-smtp's writer does that
// before QUIT), and the server would take the truncated message.
func (c *conn) close() {
	if c.cutOff {
		c.nc.Close()
		return
	}
	c.c.CommandTimeout = time.Second
	if c.c.Quit() != nil {
		c.c.Close()
	}
}

// smtpClient delivers over SMTP through a pool of connections.
type smtpClient struct {
	pool           *pool
	helo           string
	connectTimeout time.Duration
	commandTimeout time.Duration
}

// transact runs fn on a ready connection to t (greeted, EHLO done, TLS
// as the mode asks), reused from the pool when one is idle, and returns
// the connection for the caller to put back or drop. A connection from
// the pool is not probed first (that was a round trip per message): fn
// reports it stale when the server answered nothing, or 421, before it
// accepted anything, which on a reused connection means that the server
// closed it while idle; fn then runs again on another.
func (sc *smtpClient) transact(ctx context.Context, d *dest, t target, mode string, skipVerify bool, fn func(*conn) (stale bool)) (*conn, error) {
	for {
		c, err := sc.pool.acquire(ctx, d)
		if err != nil {
			return nil, err
		}
		if c == nil {
			if c, err = sc.dial(ctx, t, mode, skipVerify); err != nil {
				sc.pool.release(d)
				return nil, err
			}
			fn(c)
			return c, nil
		}
		if !fn(c) {
			return c, nil
		}
		sc.pool.drop(d, c)
	}
}

// dial opens a new connection. With opportunistic TLS a failed handshake
// is followed by one plain connection: the peer offered STARTTLS but
// cannot complete it, and unauthenticated encryption is optional anyway
// (RFC 7435 §1.2); a required TLS route never falls back.
func (sc *smtpClient) dial(ctx context.Context, t target, mode string, skipVerify bool) (*conn, error) {
	dialer := net.Dialer{Timeout: sc.connectTimeout}
	nc, err := dialer.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return nil, err
	}
	c := &conn{nc: nc, c: sc.newClient(nc)}
	if err := c.withContext(ctx, func() error { return c.c.Hello(sc.helo) }); err != nil {
		nc.Close()
		return nil, fmt.Errorf("%s: %w", t.addr, err)
	}
	if mode == tlsNone {
		return c, nil
	}
	if ok, _ := c.c.Extension("STARTTLS"); !ok {
		if mode == tlsRequired {
			c.close()
			return nil, replyErr(451, 4, 7, 10, t.addr+" does not offer STARTTLS, which the route requires")
		}
		return c, nil
	}
	cfg := &tls.Config{ServerName: t.name, MinVersion: tls.VersionTLS12}
	if mode == tlsOpportunistic || skipVerify {
		// Opportunistic TLS encrypts without authenticating the peer
		// (RFC 7435); tls_skip_verify does so for a required route.
		cfg.InsecureSkipVerify = true
	}
	var tc net.Conn
	err = c.withContext(ctx, func() (err error) {
		tc, err = sc.startTLS(nc, cfg)
		return err
	})
	if err != nil {
		nc.Close()
		if mode == tlsOpportunistic && ctx.Err() == nil {
			return sc.dial(ctx, t, tlsNone, skipVerify)
		}
		return nil, replyErr(451, 4, 7, 10, fmt.Sprintf("%s: STARTTLS: %v", t.addr, err))
	}
	// RFC 3207 §4.2: after the handshake the client starts over with EHLO.
	c = &conn{nc: tc, c: sc.newClient(&greeted{Conn: tc, greeting: strings.NewReader("220 TLS\r\n")})}
	if err := c.withContext(ctx, func() error { return c.c.Hello(sc.helo) }); err != nil {
		tc.Close()
		return nil, fmt.Errorf("%s: %w", t.addr, err)
	}
	return c, nil
}

func (sc *smtpClient) newClient(nc net.Conn) *smtp.Client {
	c := smtp.NewClient(nc)
	c.CommandTimeout = sc.commandTimeout
	c.SubmissionTimeout = sc.commandTimeout
	return c
}

// startTLS sends STARTTLS on a connection whose EHLO exchange is done and
// returns the TLS connection. go-smtp's Client has no way to start TLS on
// a session it already greeted with our EHLO name, so the command is sent
// here; nothing is buffered in the client at this point because the
// server sends nothing unasked.
func (sc *smtpClient) startTLS(nc net.Conn, cfg *tls.Config) (net.Conn, error) {
	nc.SetDeadline(time.Now().Add(sc.commandTimeout))
	defer nc.SetDeadline(time.Time{})
	if _, err := io.WriteString(nc, "STARTTLS\r\n"); err != nil {
		return nil, err
	}
	if _, _, err := textproto.NewReader(bufio.NewReader(nc)).ReadResponse(220); err != nil {
		return nil, err
	}
	tc := tls.Client(nc, cfg)
	if err := tc.Handshake(); err != nil {
		return nil, err
	}
	return tc, nil
}

// greeted hands a connection to smtp.NewClient, which reads a greeting
// first, after STARTTLS where the server sends none (RFC 3207 §4.2).
type greeted struct {
	net.Conn
	greeting *strings.Reader
}

func (g *greeted) Read(p []byte) (int, error) {
	if g.greeting.Len() > 0 {
		return g.greeting.Read(p)
	}
	return g.Conn.Read(p)
}

// withContext runs fn, closing the connection if ctx ends first so that a
// shutdown is not held up by a slow server.
func (c *conn) withContext(ctx context.Context, fn func() error) error {
	stop := context.AfterFunc(ctx, func() { c.nc.Close() })
	err := fn()
	if !stop() {
		return errors.Join(ctx.Err(), err)
	}
	return err
}

// sent is the outcome of one transaction.
type sent struct {
	errs     []error // per recipient; nil: accepted with the message
	reply    string  // the reply to the end of DATA
	reusable bool    // the session is in a clean state for another transaction
	// stale: the server answered nothing, or 421, before it accepted
	// anything (see transact).
	stale bool
}

// send runs one mail transaction (RFC 5321 §3.3) for rcpts: MAIL, RCPT
// and DATA in one write when the server offers PIPELINING (RFC 2920),
// then the message. Each recipient gets the reply to its RCPT, or, if
// accepted, the reply to DATA or to the end of the message.
func (sc *smtpClient) send(ctx context.Context, c *conn, from string, rcpts []string, size int64, msg io.Reader) sent {
	res := sent{errs: make([]error, len(rcpts))}
	// fail gives err to every recipient without a reply of its own.
	fail := func(err error, r *smtp.EnvelopeReplies) {
		for i := range res.errs {
			if r == nil || r.Rcpts[i] == nil {
				res.errs[i] = err
			}
		}
	}
	err := c.withContext(ctx, func() error {
		opts := &smtp.MailOptions{Size: size}
		if !address.IsASCII(from) || !allASCII(rcpts) {
			// RFC 6531 §3.2: non-ASCII addresses need SMTPUTF8 at the
			// next hop; without it the mail cannot be relayed.
			if ok, _ := c.c.Extension("SMTPUTF8"); !ok {
				fail(replyErr(553, 5, 6, 7, "next hop does not support SMTPUTF8"), nil)
				res.reusable = true
				return nil
			}
			opts.UTF8 = true
		}
		quoted := make([]string, len(rcpts))
		for i, rcpt := range rcpts {
			quoted[i] = quoteAddr(rcpt)
		}
		// go-smtp adds BODY=8BITMIME when the server offers it
		// (RFC 6152) and SIZE when it offers that (RFC 1870).
		r, err := c.c.SendEnvelope(quoteAddr(from), opts, quoted)
		if ns := (*smtp.NotSentError)(nil); errors.As(err, &ns) {
			// An address the client will not write (a line break in
			// it): nothing went out, the session is as clean as before,
			// and another connection would refuse it the same way.
			fail(err, nil)
			res.reusable = true
			return nil
		}
		res.stale = r.Answered == 0 || r.Mail != nil && !isReply(r.Mail)
		switch {
		case r.Mail != nil:
			fail(r.Mail, nil)
			res.reusable = err == nil && isReply(r.Mail) && c.c.Reset() == nil
			return nil
		case err != nil:
			// The session is lost; recipients refused before keep
			// their reply.
			copy(res.errs, r.Rcpts)
			fail(err, r)
			return nil
		}
		copy(res.errs, r.Rcpts)
		if r.Writer == nil {
			if r.Data != nil {
				fail(r.Data, r)
			}
			res.reusable = c.c.Reset() == nil
			return nil
		}
		if _, err := io.Copy(&deadlineWriter{w: r.Writer, nc: c.nc, timeout: sc.commandTimeout}, msg); err != nil {
			// The message is cut off mid-DATA: the session is lost, and
			// only closing the connection keeps the next hop from taking
			// what it got as the whole message; a server that loses the
			// connection drops the transaction (RFC 5321 §3.8).
			c.cutOff = true
			c.nc.Close()
			fail(fmt.Errorf("sending message: %w", err), r)
			return nil
		}
		resp, err := r.Writer.CloseWithResponse()
		if err != nil {
			fail(err, r)
			res.reusable = isReply(err)
			return nil
		}
		res.reply = "250 " + oneLine(resp.StatusText)
		res.reusable = true
		return nil
	})
	if err != nil {
		// ctx ended and closed the connection under the transaction.
		for i, e := range res.errs {
			if e != nil {
				res.errs[i] = errors.Join(err, e)
			}
		}
		res.reusable, res.stale = false, false
	}
	return res
}

// deadlineWriter gives every write of the message a deadline: go-smtp
// sets one per command but none while the message is written.
type deadlineWriter struct {
	w       io.Writer
	nc      net.Conn
	timeout time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	d.nc.SetWriteDeadline(time.Now().Add(d.timeout))
	return d.w.Write(p)
}

// quoteAddr renders an address for MAIL FROM or RCPT TO. The spool keeps
// addresses as go-smtp parsed them, a quoted local part without its
// quotes; a local part that is not a Dot-string is quoted again
// (RFC 5321 §4.1.2), or the next hop would read `"x@a"@b` as x at a.
func quoteAddr(addr string) string {
	local, domain, ok := address.Split(addr)
	if !ok || isDotString(local) {
		return addr
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, c := range []byte(local) {
		if c == '"' || c == '\\' {
			b.WriteByte('\\') // quoted-pairSMTP
		}
		b.WriteByte(c)
	}
	b.WriteString(`"@`)
	b.WriteString(domain)
	return b.String()
}

// isDotString reports whether s is atoms joined by single dots (RFC 5321
// §4.1.2; UTF-8 counts as atext, RFC 6531 §3.3).
func isDotString(s string) bool {
	if s == "" {
		return false
	}
	for atom := range strings.SplitSeq(s, ".") {
		if atom == "" {
			return false
		}
		for _, c := range []byte(atom) {
			if !isAtext(c) {
				return false
			}
		}
	}
	return true
}

func isAtext(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' ||
		c >= 0x80 || strings.IndexByte("!#$%&'*+-/=?^_`{|}~", c) >= 0
}

func allASCII(ss []string) bool {
	for _, s := range ss {
		if !address.IsASCII(s) {
			return false
		}
	}
	return true
}
