// Package spool is the durable queue on disk. A message is written to the
// spool while it is read from the client, and it is acknowledged (250) only
// after Commit returns, when message and envelope are on stable storage.
package spool

import (
	"context"
	"io"
	"time"
)

// RcptStatus is where one recipient of a queued message stands.
type RcptStatus string

const (
	Pending   RcptStatus = "pending"   // not yet delivered; will be tried (again)
	Delivered RcptStatus = "delivered" // accepted by the next hop
	Failed    RcptStatus = "failed"    // permanent failure or expired; a DSN was (or needs to be) sent
)

// Recipient is one envelope recipient and its delivery state.
type Recipient struct {
	Addr      string     `json:"addr"`
	Status    RcptStatus `json:"status"`
	Attempts  int        `json:"attempts,omitempty"`
	LastReply string     `json:"last_reply,omitempty"` // last reply from the next hop, for DSNs and `queue show`
	LastHost  string     `json:"last_host,omitempty"`
	Updated   time.Time  `json:"updated,omitzero"`
}

// Envelope is everything the spool keeps about a message besides its bytes.
type Envelope struct {
	ID       string      `json:"id"`
	From     string      `json:"from"` // "" is the null sender
	Rcpts    []Recipient `json:"rcpts"`
	Received time.Time   `json:"received"` // when the 250 was given; max age counts from here
	Size     int64       `json:"size"`     // bytes of the message file
	// Client describes where the message came from, for traces and DSNs.
	ClientAddr string `json:"client_addr,omitempty"`
	ClientHelo string `json:"client_helo,omitempty"`
	MessageID  string `json:"message_id,omitempty"`
	// DSN is true for a delivery status notification the gateway made
	// itself; its failures never produce another DSN.
	DSN bool `json:"dsn,omitempty"`
	// Scheduling.
	Attempts    int       `json:"attempts,omitempty"`
	NextAttempt time.Time `json:"next_attempt,omitzero"`
	Held        bool      `json:"held,omitempty"` // an operator put it on hold
	// DSNSent is true once the DSN for the Failed recipients was queued.
	DSNSent bool `json:"dsn_sent,omitempty"`
}

// Spool is a directory of queued messages.
type Spool struct{}

// Open opens (creating it if needed) the spool under dir and recovers from a
// crash: files of messages that were never committed are removed.
func Open(dir string) (*Spool, error) { panic("unimplemented") }

// Create starts a new message; its queue ID is fixed from here on.
func (s *Spool) Create() (*Writer, error) { panic("unimplemented") }

// List returns the envelopes of every committed message.
func (s *Spool) List() ([]*Envelope, error) { panic("unimplemented") }

// Load returns the envelope of one message.
func (s *Spool) Load(id string) (*Envelope, error) { panic("unimplemented") }

// Open returns the message bytes.
func (s *Spool) OpenMessage(id string) (io.ReadSeekCloser, error) { panic("unimplemented") }

// Update durably replaces the envelope of a committed message.
func (s *Spool) Update(env *Envelope) error { panic("unimplemented") }

// Remove deletes a message and its envelope.
func (s *Spool) Remove(id string) error { panic("unimplemented") }

// Close stops the committer.
func (s *Spool) Close() error { panic("unimplemented") }

// Writer receives the bytes of one message before it is committed.
type Writer struct{}

func (w *Writer) ID() string                                      { panic("unimplemented") }
func (w *Writer) Write(p []byte) (int, error)                     { panic("unimplemented") }
func (w *Writer) Size() int64                                     { panic("unimplemented") }
func (w *Writer) Commit(ctx context.Context, env *Envelope) error { panic("unimplemented") }
func (w *Writer) Abort() error                                    { panic("unimplemented") }

// Open returns a reader of the bytes written so far (for the data-phase
// stages that read the message before it is committed).
func (w *Writer) Open() (io.ReadSeekCloser, error) { panic("unimplemented") }

// Rewrite streams the bytes written so far through fn into a new file that
// takes their place (header edits, body replacement). Before Commit only.
func (w *Writer) Rewrite(fn func(src io.Reader, dst io.Writer) error) error { panic("unimplemented") }
