package console

import (
	"net/netip"
	"sync"
	"time"
)

// loginLimiter counts failed logins, so that a password cannot be guessed
// at speed while nobody else can lock an account's owner out:
//
//   - per client address and name, loginBurst failures, then one more every
//     loginEvery: the attempts past it are refused (429) unverified;
//   - per name, from every address together, past nameFree failures each
//     attempt waits, longer the more failures (up to nameMaxDelay), and is
//     never refused: an attacker slows guesses at the name down without
//     keeping its owner out.
//
// Only failures count, and a success forgets them. An IPv6 client counts
// as its /64, the least a site hands out: one machine has a whole /64.
type loginLimiter struct {
	mu    sync.Mutex
	pairs map[string]failures // client net + "\x00" + name
	names map[string]failures
}

const (
	loginBurst   = 10
	loginEvery   = 30 * time.Second
	nameFree     = 50
	nameStep     = 250 * time.Millisecond
	nameMaxDelay = 3 * time.Second
	// maxLoginKeys bounds each map: when full, the failures that have
	// worn off are dropped, and if that is not enough, all of them (a
	// flood of addresses must not grow memory without end).
	maxLoginKeys = 100_000
)

// failures is a leaky count: one failure wears off every loginEvery.
type failures struct {
	n    int
	last time.Time
}

func (f failures) at(now time.Time) int {
	if f.n == 0 {
		return 0
	}
	return max(0, f.n-int(now.Sub(f.last)/loginEvery))
}

func newLoginLimiter() *loginLimiter {
	return &loginLimiter{pairs: map[string]failures{}, names: map[string]failures{}}
}

// clientNet is what a client address counts as: itself, or its /64.
func clientNet(addr netip.Addr) string {
	addr = addr.Unmap()
	if addr.Is6() {
		p, _ := addr.Prefix(64)
		return p.String()
	}
	return addr.String()
}

// allow reports whether client may try name now, and how long the
// attempt must wait first.
func (l *loginLimiter) allow(client netip.Addr, name string, now time.Time) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pairs[clientNet(client)+"\x00"+name].at(now) >= loginBurst {
		return false, 0
	}
	over := l.names[name].at(now) - nameFree
	if over <= 0 {
		return true, 0
	}
	return true, min(time.Duration(over)*nameStep, nameMaxDelay)
}

// failed counts a failed attempt that allow let through.
func (l *loginLimiter) failed(client netip.Addr, name string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	bump(l.pairs, clientNet(client)+"\x00"+name, now)
	bump(l.names, name, now)
}

// succeeded forgets the failures of client for name, and of name.
func (l *loginLimiter) succeeded(client netip.Addr, name string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pairs, clientNet(client)+"\x00"+name)
	delete(l.names, name)
}

func bump(m map[string]failures, k string, now time.Time) {
	if _, ok := m[k]; !ok && len(m) >= maxLoginKeys {
		for k, f := range m {
			if f.at(now) == 0 {
				delete(m, k)
			}
		}
		if len(m) >= maxLoginKeys {
			clear(m)
		}
	}
	m[k] = failures{n: m[k].at(now) + 1, last: now}
}
