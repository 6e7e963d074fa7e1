package door

import (
	"net/netip"
	"sync"
)

// Limits counts open connections in total and per client address, and
// refuses one over either limit (0: none).
type Limits struct {
	mu       sync.Mutex
	total    int
	perIP    map[netip.Addr]int
	maxTotal int
	maxPerIP int
}

// NewLimits returns Limits of maxTotal connections, maxPerIP from one
// address.
func NewLimits(maxTotal, maxPerIP int) *Limits {
	return &Limits{perIP: make(map[netip.Addr]int), maxTotal: maxTotal, maxPerIP: maxPerIP}
}

// Set changes the limits for connections taken from now on.
func (l *Limits) Set(maxTotal, maxPerIP int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.maxTotal, l.maxPerIP = maxTotal, maxPerIP
}

// Acquire takes a slot for a, to be given back with Release; it returns
// false and the limit's name (max_connections, max_connections_per_ip)
// when a limit is reached.
func (l *Limits) Acquire(a netip.Addr) (bool, string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.maxTotal > 0 && l.total >= l.maxTotal {
		return false, "max_connections"
	}
	if l.maxPerIP > 0 && l.perIP[a] >= l.maxPerIP {
		return false, "max_connections_per_ip"
	}
	l.total++
	l.perIP[a]++
	return true, ""
}

// Release gives back a slot Acquire took for a.
func (l *Limits) Release(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.total--
	if l.perIP[a]--; l.perIP[a] <= 0 {
		delete(l.perIP, a)
	}
}
