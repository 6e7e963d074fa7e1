package console

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/state"
)

// countingLists counts the reads that reach the store.
type countingLists struct {
	state.Lists
	reads int
	down  bool // the store is unreachable
}

func (c *countingLists) Entries(ctx context.Context, owner string) ([]state.ListEntry, error) {
	c.reads++
	if c.down {
		return nil, state.ErrUnavailable
	}
	return c.Lists.Entries(ctx, owner)
}

// TestListCache: an owner's entries are read from the store once per
// ttl; a change made through the cache is seen by the next read, in
// whatever spelling the owner was written.
func TestListCache(t *testing.T) {
	e := newTestEnv(t, "")
	store := &countingLists{Lists: e.c.opts.Lists}
	now := time.Now()
	c := NewListCache(store, 10*time.Second)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	for range 3 {
		if got, err := c.Entries(ctx, "bob@example.test"); err != nil || len(got) != 0 {
			t.Fatalf("Entries = %v, %v", got, err)
		}
	}
	if store.reads != 1 {
		t.Fatalf("%d reads of the store, want 1", store.reads)
	}
	if err := c.Add(ctx, state.ListEntry{Owner: "Bob@Example.TEST", Kind: state.Block, Sender: "spam.example"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := c.Entries(ctx, "bob@example.test"); len(got) != 1 {
		t.Fatalf("after Add: %v", got)
	}
	// A change behind the cache's back (another node) shows after ttl.
	e.c.opts.Lists.Remove(ctx, "bob@example.test", state.Block, "spam.example")
	if got, _ := c.Entries(ctx, "bob@example.test"); len(got) != 1 {
		t.Fatalf("within ttl: %v", got)
	}
	now = now.Add(10 * time.Second)
	if got, _ := c.Entries(ctx, "bob@example.test"); len(got) != 0 {
		t.Fatalf("after ttl: %v", got)
	}
}

// TestListCacheStoreDown: while the store is unreachable, an owner read
// before keeps the entries last read, however old (a block holds through
// an outage); one never read gets the error (the pipeline checks no list
// for it: mail flows); when the store is back, fresh entries again.
func TestListCacheStoreDown(t *testing.T) {
	e := newTestEnv(t, "")
	store := &countingLists{Lists: e.c.opts.Lists}
	now := time.Now()
	c := NewListCache(store, 10*time.Second)
	c.now = func() time.Time { return now }
	ctx := context.Background()
	if err := c.Add(ctx, state.ListEntry{Owner: "bob@example.test", Kind: state.Block, Sender: "spam.example"}); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Entries(ctx, "bob@example.test"); err != nil || len(got) != 1 {
		t.Fatalf("Entries = %v, %v", got, err)
	}
	store.down = true
	now = now.Add(time.Hour)
	if got, err := c.Entries(ctx, "bob@example.test"); err != nil || len(got) != 1 {
		t.Fatalf("store down, bob read before: %v, %v; want the block last read", got, err)
	}
	if got, err := c.Entries(ctx, "carol@example.test"); !errors.Is(err, state.ErrUnavailable) || got != nil {
		t.Fatalf("store down, carol never read: %v, %v; want ErrUnavailable", got, err)
	}
	store.down = false
	e.c.opts.Lists.Remove(ctx, "bob@example.test", state.Block, "spam.example")
	if got, err := c.Entries(ctx, "bob@example.test"); err != nil || len(got) != 0 {
		t.Fatalf("store back: %v, %v; want the entries as they are now", got, err)
	}
}
