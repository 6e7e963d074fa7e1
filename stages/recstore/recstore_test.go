package recstore

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// clock is the test clock: it moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// TestFormat: a new store writes its kind's format line; a store of
// another kind in the directory is refused with what to do.
func TestFormat(t *testing.T) {
	dir := t.TempDir()
	if _, err := Open(dir, Options{Kind: "pregreet", MaxRecords: 10, Now: time.Now}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "format")); err != nil || string(b) != "mailgate pregreet store 1\n" {
		t.Fatalf("format file %q, %v", b, err)
	}
	_, err := Open(dir, Options{Kind: "greylist", MaxRecords: 10, Now: time.Now})
	if !errors.Is(err, ErrFormat) || !strings.Contains(err.Error(), "move the directory away") {
		t.Fatalf("a store of another kind: %v", err)
	}
}

func TestStoreExpires(t *testing.T) {
	c := newClock()
	s, err := Open(t.TempDir(), Options{Kind: "test", MaxRecords: 1000, Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := HashKey("x")
	want := Record{First: c.now(), Last: c.now().Add(time.Second), Count: 7, Passed: true, Expires: c.now().Add(time.Hour)}
	if err := s.Put(ctx, k, want); err != nil {
		t.Fatal(err)
	}
	got, ok, err := s.Get(ctx, k)
	if err != nil || !ok || !got.First.Equal(want.First) || !got.Last.Equal(want.Last) || got.Count != 7 || !got.Passed || !got.Expires.Equal(want.Expires) {
		t.Fatalf("Get = %+v, %v, %v; want %+v", got, ok, err, want)
	}
	c.add(time.Hour)
	if _, ok, _ := s.Get(ctx, k); ok {
		t.Fatal("expired record returned")
	}
	c.add(-time.Hour)
	if err := s.Delete(ctx, k); err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := s.Get(ctx, k); ok {
		t.Fatal("deleted record returned")
	}
}

// FuzzBucketFile feeds the store's file reader arbitrary bucket files: a
// slot decodes as free only when all zero, a used one is exactly what
// encodeRecord writes for it; the store neither fails nor panics on the
// file, and a record put into it reads back, the file then within its
// bound.
func FuzzBucketFile(f *testing.F) {
	k := HashKey("key")
	rec := encodeRecord(HashKey("seed"), Record{First: time.Unix(1, 2), Passed: true, Count: 3, Expires: time.Unix(100, 0)})
	mine := encodeRecord(k, Record{First: time.Unix(5, 0), Expires: time.Unix(50, 0)})
	f.Add(rec[:])
	f.Add(append(rec[:], mine[:]...))
	f.Add(make([]byte, 3*recordSize))
	f.Add([]byte("short"))
	c := newClock()
	c.t = time.Unix(10, 0)
	dir := f.TempDir()
	s, err := Open(dir, Options{Kind: "test", MaxRecords: 4 * buckets, Now: c.now}) // 4 records a bucket
	if err != nil {
		f.Fatal(err)
	}
	ctx := context.Background()
	f.Fuzz(func(t *testing.T, b []byte) {
		for i := 0; i+recordSize <= len(b); i += recordSize {
			rk, r, st := decodeRecord(b[i : i+recordSize])
			switch st {
			case slotUsed:
				if again := encodeRecord(rk, r); string(again[:]) != string(b[i:i+recordSize]) {
					t.Fatalf("decoded %x as %+v, which encodes as %x", b[i:i+recordSize], r, again)
				}
			case slotFree:
				if strings.Trim(string(b[i:i+recordSize]), "\x00") != "" {
					t.Fatalf("free slot %x", b[i:i+recordSize])
				}
			}
		}
		name := s.Path(k)
		if err := os.WriteFile(name, b, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.Get(ctx, k); err != nil {
			t.Fatal(err)
		}
		want := Record{First: c.now(), Count: 9, Expires: c.now().Add(time.Hour)}
		if err := s.Put(ctx, k, want); err != nil {
			t.Fatal(err)
		}
		got, ok, err := s.Get(ctx, k)
		if err != nil || !ok || got.Count != 9 || !got.First.Equal(want.First) {
			t.Fatalf("after Put: %+v, %v, %v", got, ok, err)
		}
		if fi, err := os.Stat(name); err != nil || fi.Size() > max(int64(len(b)), 4*recordSize) {
			t.Fatalf("bucket file of %d bytes after one Put into %d", fi.Size(), len(b))
		}
	})
}
