package spool

import (
	"context"
	"io"
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

// BenchmarkRewrite is what a header edit costs before the commit: the
// message written, read back and written again with one more field, then
// aborted. "new-file" takes the path of messages too large for memory.
func BenchmarkRewrite(b *testing.B) {
	addHeader := func(src io.Reader, dst io.Writer) error {
		io.WriteString(dst, "X-Spam-Score: 1.5\r\n")
		_, err := io.Copy(dst, src)
		return err
	}
	for _, bc := range []struct {
		name    string
		size    int
		inPlace bool
	}{
		{"5KiB-in-place", 5 << 10, true},
		{"5KiB-new-file", 5 << 10, false},
		{"100KiB-in-place", 100 << 10, true},
		{"100KiB-new-file", 100 << 10, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			s := openT(b, b.TempDir(), Options{})
			if !bc.inPlace {
				for range inPlaceSlots {
					s.inPlace <- struct{}{}
				}
			}
			msg := message("bench", bc.size)
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				w, err := s.Create()
				if err != nil {
					b.Fatal(err)
				}
				w.Write(msg)
				if err := w.Rewrite(addHeader); err != nil {
					b.Fatal(err)
				}
				if err := w.Abort(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkUpdate is one envelope rewritten, as the router does after a
// delivery attempt that leaves recipients pending.
func BenchmarkUpdate(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	env := &Envelope{From: "a@example.test", Rcpts: []Recipient{{Addr: "b@example.test", Status: Pending}}}
	w, err := s.Create()
	if err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(context.Background(), env); err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		env.Attempts++
		if err := s.Update(env); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRemove is the end of a delivered message.
func BenchmarkRemove(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	msg := message("bench", 5<<10)
	ids := make([]string, b.N)
	for i := range ids {
		w, err := s.Create()
		if err != nil {
			b.Fatal(err)
		}
		w.Write(msg)
		if err := w.Commit(context.Background(), &Envelope{From: "a@example.test"}); err != nil {
			b.Fatal(err)
		}
		ids[i] = w.ID()
	}
	b.ResetTimer()
	for _, id := range ids {
		if err := s.Remove(id); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLifecycleParallel is what a relaying gateway does to the spool
// per message: commit, then remove once delivered, from many goroutines.
func BenchmarkLifecycleParallel(b *testing.B) {
	s := openT(b, b.TempDir(), Options{})
	msg := message("bench", 5<<10)
	b.SetBytes(int64(len(msg)))
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			w, err := s.Create()
			if err != nil {
				b.Fatal(err)
			}
			w.Write(msg)
			if err := w.Commit(context.Background(), &Envelope{From: "a@example.test"}); err != nil {
				b.Fatal(err)
			}
			if err := s.Remove(w.ID()); err != nil {
				b.Fatal(err)
			}
		}
	})
}
