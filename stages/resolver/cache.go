package resolver

import (
	"container/list"
	"sync"
	"time"
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	key     cacheKey
	answer  Answer
	expires time.Time
}

// cache is a bounded LRU of answers that expire with their TTL.
type cache struct {
	mu    sync.Mutex
	size  int
	now   func() time.Time
	order *list.List // front = most recently used; values are *cacheEntry
	items map[cacheKey]*list.Element
}

func newCache(size int, now func() time.Time) *cache {
	return &cache{size: size, now: now, order: list.New(), items: make(map[cacheKey]*list.Element)}
}

// get returns a live answer with its TTL lowered to the time it has left.
func (c *cache) get(k cacheKey) (Answer, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[k]
	if !ok {
		return Answer{}, false
	}
	e := el.Value.(*cacheEntry)
	left := e.expires.Sub(c.now())
	if left <= 0 {
		c.order.Remove(el)
		delete(c.items, k)
		return Answer{}, false
	}
	c.order.MoveToFront(el)
	a := e.answer
	a.TTL = uint32((left + time.Second - 1) / time.Second)
	return a, true
}

func (c *cache) put(k cacheKey, a Answer) {
	ttl := min(time.Duration(a.TTL)*time.Second, maxCacheTTL)
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[k]; ok {
		c.order.Remove(el)
		delete(c.items, k)
	}
	c.items[k] = c.order.PushFront(&cacheEntry{key: k, answer: a, expires: c.now().Add(ttl)})
	for c.order.Len() > c.size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}
