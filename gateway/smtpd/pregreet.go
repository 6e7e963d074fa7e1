package smtpd

import (
	"errors"
	"io"
	"net/netip"
	"strconv"
	"time"

	"github.com/mailgate/mailgate/door"
)

// The pre-greet test (door.Pregreet) with the config in force:
// pregreet_delay, pregreet_bad_ttl and pregreet_good_ttl; trusted_networks
// are never tested. A client that fails is refused with 554 5.7.1. In a
// [cluster] the cache is in Redis (Options.Pregreet), so a client tested
// by one node is known to all.

// errRefusedEarly fails the banner's write to a refused client.
var errRefusedEarly = errors.New("refused by the pre-greet test")

// pregreet runs the test on a new connection before its banner is
// written. It returns nil when the banner may go (the test is off, the
// client is trusted or known good, or it waited), and an error once it
// has refused and closed c, or c's client went away.
func (s *Server) pregreet(c *door.Conn) error {
	d := s.current()
	cfg := &d.opts.Config.Server
	delay := time.Duration(cfg.PregreetDelay)
	a := door.RemoteAddr(c)
	if delay <= 0 || s.pregreetCache == nil || d.trusts(a) {
		return nil
	}
	if ok, good := s.pregreetCache.Known(a); ok {
		if good {
			return nil
		}
		s.refuseEarly(c, a, "pregreet_cached", "client cached as bad by the pre-greet test")
		return errRefusedEarly
	}
	sent, err := door.Wait(c, delay) // a client that waits is watched until its HELO/EHLO
	if len(sent) > 0 {
		s.pregreetCache.Put(a, false, time.Duration(cfg.PregreetBadTTL))
		s.refuseEarly(c, a, "pregreet", "client talked before the banner", "sent", strconv.Quote(string(sent)))
		return errRefusedEarly
	}
	return err
}

// greeted ends the test of a client that waited for the banner, at its
// first HELO/EHLO, before the reply: a client that sent more after the
// command line (pipelining, not offered yet) is refused and cached as
// bad; one that did not is cached as good. It returns false when c was
// refused and closed.
func (s *Server) greeted(c *door.Conn) bool {
	watched, pipelined := c.Watched()
	if !watched {
		return true
	}
	a := door.RemoteAddr(c)
	cfg := &s.current().opts.Config.Server
	if pipelined {
		s.pregreetCache.Put(a, false, time.Duration(cfg.PregreetBadTTL))
		s.refuseEarly(c, a, "pipelining", "client pipelined before PIPELINING was offered")
		return false
	}
	s.pregreetCache.Put(a, true, time.Duration(cfg.PregreetGoodTTL))
	return true
}

// refuseEarly answers 554 (RFC 5321 §3.1: a server may answer the
// connection with 554 instead of 220) and closes. What the client sent
// is read first, for a while, so that closing with it unread does not
// reset the connection and lose the reply on its way.
func (s *Server) refuseEarly(c *door.Conn, a netip.Addr, reason, msg string, attrs ...any) {
	s.opts.Logger.Warn("connection refused: "+msg, append([]any{"client", a}, attrs...)...)
	s.opts.Metrics.reply(errEarlyTalker.Code)
	s.opts.Metrics.refused(reason)
	c.Conn.SetWriteDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(c.Conn, replyText(errEarlyTalker)+"\r\n")
	if tc := door.TCP(c); tc != nil {
		tc.CloseWrite()
	}
	c.Conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	io.Copy(io.Discard, io.LimitReader(c.Conn, 64<<10))
	c.Conn.Close()
}
