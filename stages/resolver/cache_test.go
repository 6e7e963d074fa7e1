package resolver

import (
	"testing"
	"time"
)

func TestCacheExpiryAndEviction(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newCache(2, func() time.Time { return now })
	a, b, d := cacheKey{"a.", 1}, cacheKey{"b.", 1}, cacheKey{"d.", 1}

	c.put(a, Answer{TTL: 10})
	now = now.Add(4 * time.Second)
	got, ok := c.get(a)
	if !ok || got.TTL != 6 {
		t.Fatalf("after 4s: %v %v, want TTL 6", got, ok)
	}
	now = now.Add(6 * time.Second)
	if _, ok := c.get(a); ok {
		t.Fatal("answer outlived its TTL")
	}

	c.put(a, Answer{TTL: 100})
	c.put(b, Answer{TTL: 100})
	c.get(a) // a is now the most recently used
	c.put(d, Answer{TTL: 100})
	if _, ok := c.get(b); ok {
		t.Error("least recently used entry was not evicted")
	}
	if _, ok := c.get(a); !ok {
		t.Error("recently used entry was evicted")
	}
	if len(c.items) != 2 || c.order.Len() != 2 {
		t.Errorf("cache holds %d/%d entries, want 2", len(c.items), c.order.Len())
	}

	c.put(a, Answer{TTL: 1 << 31})
	if e := c.items[a].Value.(*cacheEntry); e.expires.Sub(now) != maxCacheTTL {
		t.Errorf("huge TTL kept for %v, want %v", e.expires.Sub(now), maxCacheTTL)
	}
}

func TestNewDefaultPort(t *testing.T) {
	r, err := New([]string{"192.0.2.1", "192.0.2.2:5353", "[2001:db8::1]"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"192.0.2.1:53", "192.0.2.2:5353", "[2001:db8::1]:53"}
	for i, s := range r.servers {
		if s != want[i] {
			t.Errorf("server %d = %s, want %s", i, s, want[i])
		}
	}
	if r.timeout != DefaultTimeout {
		t.Errorf("timeout %v, want %v", r.timeout, DefaultTimeout)
	}
}
