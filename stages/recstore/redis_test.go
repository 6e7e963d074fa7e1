package recstore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/redisconn"
	"github.com/mailgate/mailgate/stages/redistest"
)

func openRedis(t *testing.T, s *redistest.Server) *redisconn.Client {
	t.Helper()
	c, err := redisconn.Open(stages.Redis{URL: s.URL(), Timeout: 2 * time.Second, ConnectTimeout: time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestRedisStore: what one node puts, another gets, field for field,
// until it expires by the user's clock; Redis drops it then too.
func TestRedisStore(t *testing.T) {
	srv := redistest.Start(t)
	c := newClock()
	a, b := NewRedis(openRedis(t, srv), "test", c.now), NewRedis(openRedis(t, srv), "test", c.now)
	ctx := context.Background()
	k := HashKey("x")
	want := Record{First: c.now(), Last: c.now().Add(time.Second), Count: 7, Passed: true, Expires: c.now().Add(time.Hour)}
	if err := a.Put(ctx, k, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := b.Get(ctx, k)
	if err != nil || !ok || !got.First.Equal(want.First) || !got.Last.Equal(want.Last) || got.Count != 7 || !got.Passed || !got.Expires.Equal(want.Expires) {
		t.Fatalf("Get on the other node = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	if ttl := a.c.PTTL(ctx, a.key(k)).Val(); ttl <= 59*time.Minute || ttl > time.Hour {
		t.Errorf("Redis TTL %v; want the hour to the record's expiry", ttl)
	}
	// Another kind never sees it.
	if _, ok, _ := NewRedis(a.c, "other", c.now).Get(ctx, k); ok {
		t.Error("a record of kind test found as kind other")
	}
	c.add(time.Hour)
	if _, ok, _ := b.Get(ctx, k); ok {
		t.Fatal("expired record returned")
	}
	// Put after its expiry: nothing is stored.
	if err := a.Put(ctx, k, want); err != nil {
		t.Fatal(err)
	}
	if n := a.c.Exists(ctx, a.key(k)).Val(); n != 0 {
		t.Fatal("an expired record was stored")
	}
	c.add(-time.Hour)
	if err := a.Put(ctx, k, want); err != nil {
		t.Fatal(err)
	}
	if err := b.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := a.Get(ctx, k); ok {
		t.Fatal("deleted record returned")
	}
	// A value that is not a record is none.
	a.c.Set(ctx, a.key(k), "garbage", 0)
	if _, ok, err := a.Get(ctx, k); ok || err != nil {
		t.Fatalf("garbage read as a record: %v, %v", ok, err)
	}
}

// TestRedisStoreDown: with Redis away every call fails, saying Redis,
// and the store works again once it is back.
func TestRedisStoreDown(t *testing.T) {
	srv := redistest.Start(t)
	s := NewRedis(openRedis(t, srv), "test", nil)
	ctx := context.Background()
	srv.Kill()
	k := HashKey("x")
	if _, _, err := s.Get(ctx, k); err == nil {
		t.Fatal("Get with Redis down: no error")
	}
	if err := s.Put(ctx, k, Record{Passed: true}); !errors.Is(err, redisconn.ErrDown) {
		t.Fatalf("Put with Redis known down: %v; want ErrDown", err)
	}
	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for s.Put(ctx, k, Record{Passed: true}) != nil {
		if time.Now().After(deadline) {
			t.Fatal("store not working 30s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond) // polling a condition, bounded by deadline
	}
	if r, ok, err := s.Get(ctx, k); err != nil || !ok || !r.Passed {
		t.Fatalf("Get after Redis came back = %+v, %v, %v", r, ok, err)
	}
}
