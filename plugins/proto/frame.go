package proto

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	gproto "google.golang.org/protobuf/proto"
)

// AppendFrame appends f to b as it goes on the data path: its length in 4
// bytes, big-endian, then the Frame.
func AppendFrame(b []byte, f *Frame) ([]byte, error) {
	start := len(b)
	b = append(b, 0, 0, 0, 0)
	b, err := gproto.MarshalOptions{}.MarshalAppend(b, f)
	if err != nil {
		return b[:start], fmt.Errorf("marshal frame: %w", err)
	}
	n := len(b) - start - 4
	if n > MaxFrame {
		return b[:start], fmt.Errorf("frame of %d bytes; at most %d", n, MaxFrame)
	}
	binary.BigEndian.PutUint32(b[start:], uint32(n))
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
	if err := gproto.Unmarshal(b, f); err != nil {
		return fmt.Errorf("unmarshal frame: %w", err)
	}
	return nil
}
