package spf

import (
	"container/list"
	"sync"
	"time"
)

// The MAIL phase's evaluation is kept for the DATA phase of the same
// transaction, which writes Received-SPF. Answers that failed (timeouts)
// are not in the resolver's cache, so evaluating again could wait out the
// same timeouts a second time while the client waits for its reply.
const (
	memoSize = 1024
	memoTTL  = 10 * time.Minute
)

// memo is a bounded LRU of evaluations, keyed by what decides them: client
// address, HELO name and envelope sender.
type memo struct {
	mu    sync.Mutex
	size  int
	ttl   time.Duration
	order *list.List // front = most recent; values are *memoEntry
	items map[string]*list.Element
}

type memoEntry struct {
	key     string
	ev      evaluation
	expires time.Time
}

func newMemo(size int, ttl time.Duration) *memo {
	return &memo{size: size, ttl: ttl, order: list.New(), items: make(map[string]*list.Element)}
}

func (m *memo) get(key string, now time.Time) (evaluation, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	el, ok := m.items[key]
	if !ok {
		return evaluation{}, false
	}
	e := el.Value.(*memoEntry)
	if now.After(e.expires) {
		m.order.Remove(el)
		delete(m.items, key)
		return evaluation{}, false
	}
	m.order.MoveToFront(el)
	return e.ev, true
}

func (m *memo) put(key string, ev evaluation, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if el, ok := m.items[key]; ok {
		m.order.Remove(el)
	}
	m.items[key] = m.order.PushFront(&memoEntry{key: key, ev: ev, expires: now.Add(m.ttl)})
	for m.order.Len() > m.size {
		last := m.order.Back()
		m.order.Remove(last)
		delete(m.items, last.Value.(*memoEntry).key)
	}
}
