package spool

import (
	"context"
	"testing"
)

func benchCommit(b *testing.B, s *Spool, msg []byte) {
	w, err := s.Create()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := w.Write(msg); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(context.Background(), &Envelope{From: "a@example.test", Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}); err != nil {
		b.Fatal(err)
	}
}

// BenchmarkCommit is one client at a time: each commit pays two flushes.
func BenchmarkCommit(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	msg := message("bench", 5<<10)
	b.SetBytes(int64(len(msg)))
	for b.Loop() {
		benchCommit(b, s, msg)
	}
}

// BenchmarkCommitParallel is many clients at once: group commit shares
// the flushes.
func BenchmarkCommitParallel(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	msg := message("bench", 5<<10)
	b.SetBytes(int64(len(msg)))
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			benchCommit(b, s, msg)
		}
	})
}
