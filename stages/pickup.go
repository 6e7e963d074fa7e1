package stages

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/stages/address"
)

// Pickup is the envelope of a message that a stage hands to the gateway
// to send, such as a DMARC aggregate report: a stage runs out of process
// and sends no mail itself. It writes a file into <data_dir>/pickup/:
// Line, then the RFC 5322 message. The file must appear there whole,
// written elsewhere on the same file system (or under a name starting
// with a dot, which the gateway skips) and renamed into place. The
// gateway moves each file into its spool once and removes it; the router
// delivers it like any accepted mail.
type Pickup struct {
	From  string   `json:"from"` // "" is the null sender
	Rcpts []string `json:"rcpts"`
}

// ErrPickup marks a pickup file that can never be sent as it is.
var ErrPickup = errors.New("malformed pickup file")

// Line is the first line of a pickup file: the envelope as JSON, CRLF.
func (p Pickup) Line() ([]byte, error) {
	b, err := json.Marshal(p)
	if err != nil {
		return nil, err
	}
	return append(b, '\r', '\n'), nil
}

// ReadPickup reads the envelope line of a pickup file and leaves r at the
// message's first byte. The addresses come back in canonical form. An
// error wraps ErrPickup when the file is malformed, else it is r's. The
// line must fit r's buffer (the gateway's is 64 KiB).
func ReadPickup(r *bufio.Reader) (Pickup, error) {
	var p Pickup
	line, err := r.ReadSlice('\n')
	if errors.Is(err, bufio.ErrBufferFull) || (err == nil && !bytes.HasSuffix(line, []byte("\r\n"))) {
		return p, fmt.Errorf("%w: the first line is not an envelope ending in CRLF", ErrPickup)
	}
	if err != nil {
		return p, fmt.Errorf("%w: no envelope line: %v", ErrPickup, err)
	}
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return p, fmt.Errorf("%w: envelope: %v", ErrPickup, err)
	}
	if dec.More() {
		return p, fmt.Errorf("%w: envelope: more after the JSON object", ErrPickup)
	}
	if p.From != "" {
		if p.From, err = address.Parse(p.From); err != nil {
			return p, fmt.Errorf("%w: from: %v", ErrPickup, err)
		}
	}
	if len(p.Rcpts) == 0 {
		return p, fmt.Errorf("%w: no recipient", ErrPickup)
	}
	for i := range p.Rcpts {
		if p.Rcpts[i], err = address.Parse(p.Rcpts[i]); err != nil {
			return p, fmt.Errorf("%w: rcpts[%d]: %v", ErrPickup, i, err)
		}
	}
	if _, err := r.Peek(1); err != nil {
		return p, fmt.Errorf("%w: no message after the envelope", ErrPickup)
	}
	return p, nil
}
