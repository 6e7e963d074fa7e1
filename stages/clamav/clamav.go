// Package clamav scans messages for viruses with clamd, ClamAV's daemon,
// over its INSTREAM command: the whole message (header and body) is
// streamed in chunks, and clamd, with ScanMail on, decodes the MIME parts
// and scans each of them.
package clamav

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
)

const (
	// chunkSize is the data sent per INSTREAM chunk. clamd reads chunks of
	// any size up to StreamMaxLength; 64 KiB keeps memory flat and the
	// number of writes low.
	chunkSize = 64 << 10
	// maxReply bounds what is read of clamd's reply: one line naming at
	// most one signature.
	maxReply = 4096
)

// reply is the generic text a rejected sender sees: never the signature,
// which tells an attacker which scanner and which database are in use.
var reply = stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}

// ClamAV is one configured clamav stage. It opens one connection per scan:
// clamd closes the connection after an INSTREAM reply anyway, and a Unix
// or loopback connection costs little next to a scan.
type ClamAV struct {
	network, addr string
	maxSize       int64
	skipBig       bool // oversize = "skip"
	score         float64
}

var _ stages.Filter = (*ClamAV)(nil)

// Info declares the data phase: clamd needs the whole message.
func (c *ClamAV) Info() stages.Info {
	return stages.Info{
		Kind:    "clamav",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody,
		Results: Results(),
	}
}

// Results are the result words of the kind's verdicts.
func Results() []string { return []string{"clean", "infected", "skipped"} }

// Run scans the message. The verdict's result is "clean", "infected" (the
// signature in Reason; the action reject, which [stage.results] may map to
// another) or "skipped" (larger than max_size); clamd down, slow or
// answering with an error is a stage error.
func (c *ClamAV) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	size, _ := tx.Header.WriteTo(io.Discard)
	if tx.Body != nil {
		size += tx.Body.Size()
	}
	if size > c.maxSize {
		msg := fmt.Sprintf("message of %d bytes is larger than max_size %d", size, c.maxSize)
		if !c.skipBig {
			return stages.Verdict{}, errors.New(msg)
		}
		return stages.Verdict{Result: "skipped", Reason: msg + "; not scanned"}, nil
	}
	msg, err := tx.Message()
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("open message: %w", err)
	}
	defer msg.Close()
	answer, err := c.scan(ctx, msg)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("clamd %s:%s: %w", c.network, c.addr, err)
	}
	signature, err := parseReply(answer)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("clamd %s:%s: %w", c.network, c.addr, err)
	}
	if signature == "" {
		return stages.Verdict{Result: "clean"}, nil
	}
	r := reply
	return stages.Verdict{
		Action: stages.Reject,
		Score:  c.score,
		Result: "infected",
		Reason: "signature " + signature,
		Reply:  &r,
	}, nil
}

// scan streams msg to clamd and returns its reply.
func (c *ClamAV) scan(ctx context.Context, msg io.Reader) (string, error) {
	var d net.Dialer
	conn, err := d.DialContext(ctx, c.network, c.addr)
	if err != nil {
		return "", fmt.Errorf("connect: %w", err)
	}
	defer conn.Close()
	// Unblock a read or write in progress when ctx ends.
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	err = send(conn, msg)
	var werr *writeError
	if err != nil && !errors.As(err, &werr) {
		return "", err
	}
	// clamd stops reading when it refuses a stream ("INSTREAM size limit
	// exceeded") and says why before it closes: after a failed write its
	// reply is still the better error.
	answer, rerr := readReply(conn)
	if ctx.Err() != nil {
		return "", fmt.Errorf("scan: %w", context.Cause(ctx))
	}
	if rerr != nil {
		if err != nil {
			return "", err
		}
		return "", rerr
	}
	return answer, nil
}

// writeError is a failed write to clamd, as opposed to a failed read of the
// message.
type writeError struct{ err error }

func (e *writeError) Error() string { return "send: " + e.err.Error() }
func (e *writeError) Unwrap() error { return e.err }

// send writes the INSTREAM command and msg as chunks, each a 4-byte
// big-endian length and the data, ended by a zero-length chunk (clamd(8),
// INSTREAM).
func send(w io.Writer, msg io.Reader) error {
	// The z prefix makes clamd end its reply with NUL (clamd(8), COMMANDS).
	if _, err := io.WriteString(w, "zINSTREAM\x00"); err != nil {
		return &writeError{err}
	}
	buf := make([]byte, 4+chunkSize)
	for {
		n, err := io.ReadFull(msg, buf[4:])
		if n > 0 {
			binary.BigEndian.PutUint32(buf, uint32(n))
			if _, werr := w.Write(buf[:4+n]); werr != nil {
				return &writeError{werr}
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			break
		}
		if err != nil {
			return fmt.Errorf("read message: %w", err)
		}
	}
	if _, err := w.Write([]byte{0, 0, 0, 0}); err != nil {
		return &writeError{err}
	}
	return nil
}

// readReply reads clamd's reply up to its terminating NUL, or up to the end
// of the connection from a clamd that sent none.
func readReply(r io.Reader) (string, error) {
	b, err := bufio.NewReader(io.LimitReader(r, maxReply)).ReadBytes(0)
	switch {
	case err == nil:
		return string(b[:len(b)-1]), nil
	case err == io.EOF && len(b) > 0:
		return string(b), nil
	case err == io.EOF:
		return "", errors.New("connection closed without a reply")
	}
	return "", fmt.Errorf("read reply: %w", err)
}

// parseReply reads an INSTREAM reply: "stream: OK" gives "", "stream: <name>
// FOUND" gives the signature name, and anything else, such as
// "INSTREAM size limit exceeded. ERROR", is an error.
func parseReply(answer string) (signature string, err error) {
	a := strings.TrimSpace(answer)
	if rest, ok := strings.CutPrefix(a, "stream: "); ok {
		if rest == "OK" {
			return "", nil
		}
		if name, ok := strings.CutSuffix(rest, " FOUND"); ok && strings.TrimSpace(name) != "" {
			return strings.TrimSpace(name), nil
		}
	}
	if strings.HasSuffix(a, "ERROR") {
		return "", fmt.Errorf("error reply %q", a)
	}
	return "", fmt.Errorf("unexpected reply %q", a)
}
