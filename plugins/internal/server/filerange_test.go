package server

import (
	"bytes"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"testing/iotest"
)

// TestRangeReader: the body range of a spooled file reads as the bytes
// of the range and no others, small and large, and a file shorter than
// the range the host named is an error, not a short body.
func TestRangeReader(t *testing.T) {
	data := make([]byte, 3*readAhead+123)
	for i := range data {
		data[i] = byte(i*7 + i/251)
	}
	path := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct{ off, size int64 }{
		{0, 0}, {10, 5120}, {100, readAhead}, {7, readAhead + 1}, {0, int64(len(data))},
	} {
		r, err := openRange(path, c.off, c.size)
		if err != nil {
			t.Fatal(err)
		}
		// TestReader reads in many ways, small reads among them.
		if err := iotest.TestReader(r, data[c.off:c.off+c.size]); err != nil {
			t.Errorf("range %d+%d: %v", c.off, c.size, err)
		}
		r.Close()
		r, _ = openRange(path, c.off, c.size)
		got, err := io.ReadAll(r)
		if err != nil || !bytes.Equal(got, data[c.off:c.off+c.size]) {
			t.Errorf("range %d+%d: ReadAll got %d bytes, %v", c.off, c.size, len(got), err)
		}
		if err := r.Close(); err != nil {
			t.Error(err)
		}
		if err := r.Close(); !errors.Is(err, fs.ErrClosed) {
			t.Errorf("second Close: %v, want fs.ErrClosed", err)
		}
		if _, err := r.Read(make([]byte, 1)); !errors.Is(err, fs.ErrClosed) {
			t.Errorf("Read after Close: %v, want fs.ErrClosed", err)
		}
	}
	for _, size := range []int64{100, readAhead * 2} {
		r, err := openRange(path, int64(len(data))-10, size)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadAll(r); !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Errorf("a range of %d past the end of the file: %v, want io.ErrUnexpectedEOF", size, err)
		}
		r.Close()
	}
	if _, err := openRange(filepath.Join(t.TempDir(), "gone"), 0, 1); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("open of a missing file: %v, want fs.ErrNotExist", err)
	}
}

// BenchmarkBodyRead is what a stage pays to read a 5 KiB spooled body:
// open, io.ReadAll, close.
func BenchmarkBodyRead(b *testing.B) {
	path := filepath.Join(b.TempDir(), "msg")
	if err := os.WriteFile(path, make([]byte, 6<<10), 0o600); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		r, err := fileBody{path: path, offset: 900, size: 5 << 10}.Open()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadAll(r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
