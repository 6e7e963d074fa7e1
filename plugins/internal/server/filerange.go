package server

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"runtime"

	"golang.org/x/sys/unix"
)

// rangeReader reads a byte range of a file, the body of a message the
// host spooled, on a bare descriptor: os.Open would also offer the file
// to the runtime's poller (a system call that fails for a regular file)
// and set a finalizer, and a stage's small reads (io.ReadAll starts at
// 512 bytes) would each be a pread. A range of up to readAhead bytes is
// read at the first Read in one pread. It was a tenth of a plugin
// process's CPU per message with the default chain (BENCHMARKS.md).
type rangeReader struct {
	fd       int
	off, end int64
	buf      []byte // read ahead, not yet returned
	cleanup  runtime.Cleanup
}

// readAhead is the largest range read whole at the first Read.
const readAhead = 64 << 10

func openRange(path string, offset, size int64) (*rangeReader, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	for err == unix.EINTR {
		fd, err = unix.Open(path, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	}
	if err != nil {
		return nil, fmt.Errorf("open body: %w", &fs.PathError{Op: "open", Path: path, Err: err})
	}
	r := &rangeReader{fd: fd, off: offset, end: offset + size}
	// A stage that forgets Close must not leak the descriptor.
	r.cleanup = runtime.AddCleanup(r, func(fd int) { unix.Close(fd) }, fd)
	return r, nil
}

func (r *rangeReader) Read(p []byte) (int, error) {
	if r.fd < 0 {
		return 0, fs.ErrClosed
	}
	if len(r.buf) == 0 {
		left := r.end - r.off
		switch {
		case left <= 0:
			return 0, io.EOF
		case int64(len(p)) < left && left <= readAhead:
			r.buf = make([]byte, left)
			n, err := r.pread(r.buf)
			r.buf = r.buf[:n]
			if n == 0 {
				return 0, err
			}
		default:
			return r.pread(p[:min(int64(len(p)), left)])
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// pread fills p from the file at r.off, or returns why it could not: a
// file shorter than the range the host named is an unexpected EOF.
func (r *rangeReader) pread(p []byte) (int, error) {
	done := 0
	for done < len(p) {
		n, err := unix.Pread(r.fd, p[done:], r.off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return done, fmt.Errorf("read body: %w", err)
		}
		if n == 0 {
			return done, io.ErrUnexpectedEOF
		}
		done += n
		r.off += int64(n)
	}
	return done, nil
}

func (r *rangeReader) Close() error {
	if r.fd < 0 {
		return fs.ErrClosed
	}
	r.cleanup.Stop()
	err := unix.Close(r.fd)
	r.fd = -1
	return err
}
