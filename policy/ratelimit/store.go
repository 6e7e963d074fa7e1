package ratelimit

import (
	"context"
	"crypto/sha256"
	"sync"
	"time"
)

// Key names the state of one rule's key: the rule's name and the value
// counted ("192.0.2.0/24", a sender), hashed. A hash keeps every record
// one size and addresses out of the state file; it is SHA-256 so that a
// sender cannot pick an address whose key is another's and spend its
// limit.
type Key [16]byte

// KeyOf is the Key of value under rule.
func KeyOf(rule, value string) Key {
	sum := sha256.Sum256([]byte(rule + "\x00" + value))
	return Key(sum[:16])
}

// Store keeps the TAT of each key (see Limit).
type Store interface {
	// Take runs lim.Take on the TAT of k at now and stores the result,
	// as one atomic step: two gateways sharing the store must not both
	// spend the last event of a burst. A store shared by several
	// gateways may use a clock of its own instead of now.
	Take(ctx context.Context, k Key, lim Limit, now time.Time) (bool, error)
}

// MaxKeys is how many keys a Table holds by default: some 40 bytes of
// memory each, 24 in the state file.
const MaxKeys = 1 << 18

// Table is the embedded Store: the TATs in memory. A key whose TAT has
// passed is as good as none (its burst is whole), so a table drops such
// keys when it runs out of room, and then, if it is still nearly full,
// drops keys at random (each of them gets its burst whole again: fail
// open), reporting how many.
type Table struct {
	mu      sync.Mutex
	tats    map[Key]int64
	max     int
	changed bool // since the last snapshot
	// evicted is told how many keys were dropped before their time.
	evicted func(n int)
}

var _ Store = (*Table)(nil)

// NewTable returns an empty table of at most maxKeys keys (0: MaxKeys).
func NewTable(maxKeys int) *Table {
	if maxKeys <= 0 {
		maxKeys = MaxKeys
	}
	return &Table{tats: map[Key]int64{}, max: maxKeys, evicted: func(int) {}}
}

// Take implements Store. It never fails.
func (t *Table) Take(_ context.Context, k Key, lim Limit, now time.Time) (bool, error) {
	n := now.UnixNano()
	t.mu.Lock()
	defer t.mu.Unlock()
	tat, known := t.tats[k]
	next, ok := lim.Take(tat, n)
	if next == tat {
		return ok, nil
	}
	if !known && len(t.tats) >= t.max {
		t.makeRoom(n)
	}
	t.tats[k] = next
	t.changed = true
	return ok, nil
}

// makeRoom drops the keys whose TAT has passed and, if that leaves the
// table more than 7/8 full, random keys down to 7/8, so that the next
// max/8 new keys find room without another sweep. Under t.mu.
func (t *Table) makeRoom(now int64) {
	t.prune(now)
	dropped := 0
	for k := range t.tats { // Go's map order is random enough
		if len(t.tats) <= t.max-t.max/8-1 {
			break
		}
		delete(t.tats, k)
		dropped++
	}
	if dropped > 0 {
		t.evicted(dropped)
	}
}

// prune drops the keys whose TAT has passed. Under t.mu.
func (t *Table) prune(now int64) {
	for k, tat := range t.tats {
		if tat <= now {
			delete(t.tats, k)
		}
	}
}

// Len returns how many keys the table holds.
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.tats)
}
