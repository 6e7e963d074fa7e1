package smtpd

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/stages/recstore"
)

// The pre-greet test, as Postfix's postscreen: an SMTP client speaks only
// after the server's banner and, before PIPELINING is offered in the EHLO
// reply, only after each reply (RFC 5321 §4.3.1, RFC 2920 §3.1).
// Spamware in a hurry talks first. With pregreet_delay set, the banner
// waits that long; a client that sends anything meanwhile, or sends more
// after its HELO/EHLO line before the reply, is refused with 554 5.7.1
// and cached as bad for pregreet_bad_ttl (refused at once meanwhile). A
// client that waits and greets in turn is cached as good for
// pregreet_good_ttl and meets no delay meanwhile. trusted_networks are
// never tested. The cache survives restarts: a recstore under
// data_dir/pregreet. When the store fails, clients are tested as if
// unknown (fail open for those cached bad), logged. In a [cluster] the
// cache is in Redis (Options.Pregreet), so a client tested by one node is
// known to all.

// pregreetRecords bounds the cache: 100,000 addresses, 6.4 MB.
const pregreetRecords = 100_000

// errRefusedEarly fails the banner's write to a refused client.
var errRefusedEarly = errors.New("refused by the pre-greet test")

// pregreetCache is who passed or failed the test.
type pregreetCache struct {
	store   recstore.Store
	now     func() time.Time
	log     *slog.Logger
	metrics *Metrics

	mu       sync.Mutex
	lastWarn time.Time // store failures are logged once a minute
}

// openPregreetCache opens the cache in store, or, when store is nil, in
// a recstore under dataDir.
func openPregreetCache(store recstore.Store, dataDir string, now func() time.Time, log *slog.Logger, m *Metrics) (*pregreetCache, error) {
	p := &pregreetCache{store: store, now: now, log: log, metrics: m}
	if store != nil {
		return p, nil
	}
	dir := filepath.Join(dataDir, "pregreet")
	st, err := recstore.Open(dir, recstore.Options{Kind: "pregreet", MaxRecords: pregreetRecords, Now: now,
		Corrupt: func(file string, n int) {
			log.Warn("pregreet: corrupt records dropped from the cache; those clients are tested again", "file", file, "records", n)
		}})
	if errors.Is(err, recstore.ErrFormat) {
		return nil, err
	}
	p.store = st
	if err != nil {
		p.storeFailed(err) // tested as unknown until the store works
	}
	return p, nil
}

func pregreetKey(a netip.Addr) recstore.Key { return recstore.HashKey("p\x00" + a.String()) }

// known returns whether a is cached, and as good or bad.
func (p *pregreetCache) known(a netip.Addr) (ok, good bool) {
	r, ok, err := p.store.Get(context.Background(), pregreetKey(a))
	if err != nil {
		p.storeFailed(err)
		return false, false
	}
	return ok, r.Passed
}

func (p *pregreetCache) put(a netip.Addr, good bool, ttl time.Duration) {
	now := p.now()
	if err := p.store.Put(context.Background(), pregreetKey(a), recstore.Record{Last: now, Passed: good, Expires: now.Add(ttl)}); err != nil {
		p.storeFailed(err)
	}
}

func (p *pregreetCache) storeFailed(err error) {
	p.metrics.storeError()
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.lastWarn) >= time.Minute {
		p.lastWarn = now
		p.log.Warn("pregreet: cache not usable; clients are tested as unknown", "err", err)
	}
}

// pregreet runs the test on a new connection before its banner is
// written. It returns nil when the banner may go (the test is off, the
// client is trusted or known good, or it waited), and an error once it
// has refused and closed c, or c's client went away.
func (s *Server) pregreet(c *limitedConn) error {
	d := s.current()
	cfg := &d.opts.Config.Server
	delay := time.Duration(cfg.PregreetDelay)
	a := door.RemoteAddr(c)
	if delay <= 0 || s.pregreetCache == nil || d.trusts(a) {
		return nil
	}
	if ok, good := s.pregreetCache.known(a); ok {
		if good {
			return nil
		}
		s.refuseEarly(c, a, "pregreet_cached", "client cached as bad by the pre-greet test")
		return errRefusedEarly
	}
	c.Conn.SetReadDeadline(time.Now().Add(delay))
	buf := make([]byte, 64)
	n, err := c.Conn.Read(buf)
	c.Conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		s.pregreetCache.put(a, false, time.Duration(cfg.PregreetBadTTL))
		s.refuseEarly(c, a, "pregreet", "client talked before the banner", "sent", strconv.Quote(string(buf[:n])))
		return errRefusedEarly
	case errors.As(err, &ne) && ne.Timeout():
		c.pipelineWatch = true // until its HELO/EHLO: see pipelined
		return nil
	default: // gone (EOF, reset) before the banner: nothing learnt
		c.Conn.Close()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
}

// greeted ends the test of a client that waited for the banner, at its
// first HELO/EHLO, before the reply: a client that sent more after the
// command line (pipelining, not offered yet) is refused and cached as
// bad; one that did not is cached as good. It returns false when c was
// refused and closed.
func (s *Server) greeted(c *limitedConn) bool {
	if c == nil || !c.pipelineWatch {
		return true
	}
	c.pipelineWatch = false
	a := door.RemoteAddr(c)
	cfg := &s.current().opts.Config.Server
	if c.pipelined || door.Readable(c) {
		s.pregreetCache.put(a, false, time.Duration(cfg.PregreetBadTTL))
		s.refuseEarly(c, a, "pipelining", "client pipelined before PIPELINING was offered")
		return false
	}
	s.pregreetCache.put(a, true, time.Duration(cfg.PregreetGoodTTL))
	return true
}

// refuseEarly answers 554 (RFC 5321 §3.1: a server may answer the
// connection with 554 instead of 220) and closes. What the client sent
// is read first, for a while, so that closing with it unread does not
// reset the connection and lose the reply on its way.
func (s *Server) refuseEarly(c *limitedConn, a netip.Addr, reason, msg string, attrs ...any) {
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
