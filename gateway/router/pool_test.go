package router

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestPoolCapAndForget(t *testing.T) {
	p := newPool(2, time.Minute)
	k := destKey{addr: "127.0.0.1:25"}
	d := p.dest(k)
	for range 2 {
		if c, err := p.acquire(context.Background(), d); c != nil || err != nil {
			t.Fatalf("acquire = %v, %v; want a slot to dial", c, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := p.acquire(ctx, d); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("third acquire at max_connections 2: %v, want to wait", err)
	}
	p.release(d)
	if c, err := p.acquire(context.Background(), d); c != nil || err != nil {
		t.Fatalf("acquire after release = %v, %v", c, err)
	}

	p.release(d)
	p.release(d)
	p.sweep(false)
	if len(p.dests) != 1 {
		t.Fatal("sweep forgot a destination in use")
	}
	p.done(d)
	p.sweep(false)
	if len(p.dests) != 0 {
		t.Errorf("sweep kept %d unused destinations", len(p.dests))
	}
}
