package door

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages/recstore"
)

// Pregreet is the pre-greet test, as Postfix's postscreen: a client of a
// protocol where the server speaks first (SMTP) waits for the greeting,
// and, until the server offers pipelining, for the reply to each command
// (RFC 5321 §4.3.1, RFC 2920 §3.1). Spamware in a hurry talks first. The
// server delays its greeting; a client that sends anything meanwhile
// (Test), or sends more after its first command before the reply
// (Greeted), fails and is cached as bad, one that waits is cached as
// good and meets no delay while it is. The cache survives restarts: a
// recstore under the data directory, or the store a cluster shares.
// When the store fails, clients are tested as if unknown (fail open for
// those cached bad), logged.
type Pregreet struct {
	store  recstore.Store
	now    func() time.Time
	log    *slog.Logger
	failed func() // a read or write of the cache failed

	mu       sync.Mutex
	lastWarn time.Time // store failures are logged once a minute
}

// pregreetRecords bounds the cache: 100,000 addresses, 6.4 MB.
const pregreetRecords = 100_000

// OpenPregreet opens the cache in store, or, when store is nil, in a
// recstore under dataDir/pregreet, on the clock now (nil: time.Now).
// failed, if set, is told of each failure of the store.
func OpenPregreet(store recstore.Store, dataDir string, now func() time.Time, log *slog.Logger, failed func()) (*Pregreet, error) {
	if now == nil {
		now = time.Now
	}
	p := &Pregreet{store: store, now: now, log: log, failed: failed}
	if store != nil {
		return p, nil
	}
	st, err := recstore.Open(filepath.Join(dataDir, "pregreet"), recstore.Options{Kind: "pregreet", MaxRecords: pregreetRecords, Now: now,
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

// Known returns whether a is cached, and as good or bad.
func (p *Pregreet) Known(a netip.Addr) (ok, good bool) {
	r, ok, err := p.store.Get(context.Background(), pregreetKey(a))
	if err != nil {
		p.storeFailed(err)
		return false, false
	}
	return ok, r.Passed
}

// Put caches a as good or bad for ttl.
func (p *Pregreet) Put(a netip.Addr, good bool, ttl time.Duration) {
	now := p.now()
	if err := p.store.Put(context.Background(), pregreetKey(a), recstore.Record{Last: now, Passed: good, Expires: now.Add(ttl)}); err != nil {
		p.storeFailed(err)
	}
}

func (p *Pregreet) storeFailed(err error) {
	if p.failed != nil {
		p.failed()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if now := time.Now(); now.Sub(p.lastWarn) >= time.Minute {
		p.lastWarn = now
		p.log.Warn("pregreet: cache not usable; clients are tested as unknown", "err", err)
	}
}

// Wait waits up to delay for c's client to send anything before the
// greeting. It returns what the client sent, if it did; nil when it
// waited, and then c watches its commands until the test ends (Greeted);
// or an error, c closed, when the client went away first.
func Wait(c *Conn, delay time.Duration) (sent []byte, err error) {
	c.Conn.SetReadDeadline(time.Now().Add(delay))
	buf := make([]byte, 64)
	n, err := c.Conn.Read(buf)
	c.Conn.SetReadDeadline(time.Time{})
	var ne net.Error
	switch {
	case n > 0:
		return buf[:n], nil
	case errors.As(err, &ne) && ne.Timeout():
		c.Watch()
		return nil, nil
	default: // gone (EOF, reset) before the greeting: nothing learnt
		c.Conn.Close()
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
}
