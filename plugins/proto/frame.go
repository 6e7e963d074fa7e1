package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
)

// AppendFrame appends f to b as it goes on the data path: its length in 4
// bytes, big-endian, then the Frame.
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	start := len(b)
	n := f.SizeVT()
	if n > MaxFrame {
		return b, fmt.Errorf("frame of %d bytes; at most %d", n, MaxFrame)
	}
	b = slices.Grow(b, 4+n)[:start+4+n]
	binary.BigEndian.PutUint32(b[start:], uint32(n))
	if _, err := f.MarshalToSizedBufferVT(b[start+4:]); err != nil {
		return b[:start], fmt.Errorf("marshal frame: %w", err)
	}
	return b, nil
}

// ErrFrameTooLong is a frame longer than MaxFrame: the other side does not
// speak the data path, and the connection is unusable.
var ErrFrameTooLong = errors.New("data path frame longer than MaxFrame")

// ReadFrame reads the next frame from r into f, using *buf for its bytes
// (grown as needed and kept for the next call). It returns io.EOF only at
// a frame boundary.
func ReadFrame(r io.Reader, buf *[]byte, f *Frame) error {
	var head [4]byte
	if _, err := io.ReadFull(r, head[:]); err != nil {
		return err
	}
	n := binary.BigEndian.Uint32(head[:])
	if n > MaxFrame {
		return ErrFrameTooLong
	}
	if cap(*buf) < int(n) {
		*buf = make([]byte, n)
	}
	b := (*buf)[:n]
	if _, err := io.ReadFull(r, b); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return err
	}
	// Unmarshal copies what it keeps, so b is free for the next frame.
	// UnmarshalVT merges into f, where the runtime's Unmarshal resets it.
	f.Reset()
	if err := f.UnmarshalVT(b); err != nil {
		return fmt.Errorf("unmarshal frame: %w", err)
	}
	return nil
}
