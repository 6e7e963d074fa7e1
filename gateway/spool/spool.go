// Package spool is the durable queue on disk. A message is written to the
// spool while it is read from the client, and it is acknowledged (250) only
// after Commit returns, when message and envelope are on stable storage.
//
// # On-disk layout
//
//	<dir>/lock       flock: exclusive during recovery, shared while open
//	<dir>/msg/<id>   message bytes, written in place from Create on
//	<dir>/env/<id>   envelope (JSON); its presence means "committed"
//	<dir>/tmp/       envelopes and large rewritten messages being written
//
// An <id> is a queue ID: 16 characters of base32hex (0-9, A-V) encoding
// the creation time in milliseconds and 32 random bits, so IDs sort by time.
//
// A file in env/ only ever appears by rename(2) of a complete envelope from
// tmp/, and only after the message file, its directory entry and the
// envelope's bytes were flushed. So a message is committed exactly when
// env/<id> exists, and a committed message is never half-written. Commit
// flushes once more (env/) before it returns, so after a nil Commit a kill
// -9 or a power loss does not lose the message.
//
// Recovery (Open, when no other process has the spool open) removes tmp/,
// every msg/<id> without env/<id> (never committed, or aborted) and every
// env/<id> without msg/<id> (a Remove cut short).
//
// Remove does not flush: after a power loss a removed message may come back
// and be delivered twice, but it is never lost.
package spool

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/maphash"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
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

// ErrClosed is returned by calls on a closed Spool.
var ErrClosed = errors.New("spool: closed")

// IsFull reports whether err comes from a full disk or an exhausted quota,
// the case for a 452 reply (RFC 5321 section 4.2.2: insufficient system
// storage) rather than a 451.
func IsFull(err error) bool {
	return errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT)
}

// Options changes how a Spool behaves; the zero value is what Open uses.
type Options struct {
	// FailWrites, if set, is called before every write to a spool file
	// (message bytes, rewrites, envelopes). A non-nil error is returned in
	// place of that write's result, wrapped like a real one, so that tests
	// of callers can simulate a failing or full disk (syscall.ENOSPC).
	FailWrites func() error
}

// Spool is a directory of queued messages. Its methods are safe for
// concurrent use.
type Spool struct {
	msgDir, envDir, tmpDir string
	opts                   Options
	lock                   *os.File // holds the flock until Close
	msgDirF                *os.File // a handle on the file system, for syncfs
	envDirF                *os.File // fsync makes renames into env/ durable
	ids                    idGen

	// idLocks serialize Update and Remove of the same message, so an Update
	// never brings back the envelope of a message being removed.
	seed    maphash.Seed
	idLocks [64]sync.Mutex

	// inPlace holds a token for each Rewrite collecting a message in
	// memory, to bound the memory they take together.
	inPlace chan struct{}

	mu      sync.Mutex
	pending []*job // commits and updates waiting for the next flush
	closed  bool
	wake    chan struct{} // one token: pending is not empty, or closed
	stopped chan struct{} // closed when the committer has returned
}

// Open opens (creating it if needed) the spool under dir and recovers from a
// crash: files of messages that were never committed are removed.
func Open(dir string) (*Spool, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with options.
//
// Recovery runs only if no other process has the spool open (it holds a
// shared flock on <dir>/lock), so that a second process, such as a queue
// command next to a running server, never removes the messages the server
// is receiving. A process that dies drops its lock with it.
func OpenWith(dir string, opts Options) (*Spool, error) {
	s := &Spool{
		msgDir:  filepath.Join(dir, "msg"),
		envDir:  filepath.Join(dir, "env"),
		tmpDir:  filepath.Join(dir, "tmp"),
		opts:    opts,
		seed:    maphash.MakeSeed(),
		inPlace: make(chan struct{}, inPlaceSlots),
		wake:    make(chan struct{}, 1),
		stopped: make(chan struct{}),
	}
	for _, d := range []string{s.msgDir, s.envDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, fmt.Errorf("open spool: %w", err)
		}
	}
	if err := s.lockAndRecover(filepath.Join(dir, "lock")); err != nil {
		return nil, fmt.Errorf("open spool %s: %w", dir, err)
	}
	var err error
	if s.msgDirF, err = os.Open(s.msgDir); err == nil {
		s.envDirF, err = os.Open(s.envDir)
	}
	if err != nil {
		s.closeFiles()
		return nil, fmt.Errorf("open spool: %w", err)
	}
	go s.commitLoop()
	return s, nil
}

// lockAndRecover takes the spool's flock, exclusively first: if that
// succeeds nobody else uses the spool and it recovers; then it keeps a
// shared lock, so that others can open the spool but not recover it.
func (s *Spool) lockAndRecover(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	fd := int(f.Fd())
	err = syscall.Flock(fd, syscall.LOCK_EX|syscall.LOCK_NB)
	switch {
	case err == nil:
		err = s.recover()
		if err == nil {
			err = syscall.Flock(fd, syscall.LOCK_SH)
		}
	case errors.Is(err, syscall.EWOULDBLOCK):
		// Another process is running; if it is recovering, this waits
		// until it is done.
		err = syscall.Flock(fd, syscall.LOCK_SH)
		if err == nil {
			err = s.scanIDs()
		}
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", path, err)
	}
	s.lock = f
	return nil
}

// recover removes what a crash left behind; see the package comment.
func (s *Spool) recover() error {
	if err := os.RemoveAll(s.tmpDir); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	if err := os.Mkdir(s.tmpDir, 0o700); err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	msgs, err := readIDs(s.msgDir)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	envs, err := readIDs(s.envDir)
	if err != nil {
		return fmt.Errorf("recover: %w", err)
	}
	for id := range msgs {
		if !envs[id] {
			if err := os.Remove(filepath.Join(s.msgDir, id)); err != nil {
				return fmt.Errorf("recover: remove uncommitted message: %w", err)
			}
		}
	}
	for id := range envs {
		if !msgs[id] {
			if err := os.Remove(filepath.Join(s.envDir, id)); err != nil {
				return fmt.Errorf("recover: remove envelope without message: %w", err)
			}
			continue
		}
		s.ids.observe(id)
	}
	return nil
}

// scanIDs makes the ID generator start above every ID on disk.
func (s *Spool) scanIDs() error {
	for _, d := range []string{s.msgDir, s.envDir} {
		ids, err := readIDs(d)
		if err != nil {
			return err
		}
		for id := range ids {
			s.ids.observe(id)
		}
	}
	return nil
}

// readIDs returns the names in dir that are queue IDs; others are not the
// spool's and are left alone.
func readIDs(dir string) (map[string]bool, error) {
	names, err := readNames(dir)
	if err != nil {
		return nil, err
	}
	ids := make(map[string]bool, len(names))
	for _, n := range names {
		if ValidID(n) {
			ids[n] = true
		}
	}
	return ids, nil
}

func readNames(dir string) ([]string, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	return d.Readdirnames(-1)
}

// Create starts a new message; its queue ID is fixed from here on.
func (s *Spool) Create() (*Writer, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	for {
		id := s.ids.next(time.Now())
		path := filepath.Join(s.msgDir, id)
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // only after the clock went back; the next ID is higher
		}
		if err != nil {
			return nil, fmt.Errorf("spool: create message: %w", err)
		}
		return newWriter(s, id, path, f), nil
	}
}

// MessagePath is the file that holds the bytes of message id, for a reader
// in another process. It must be opened read-only.
func (s *Spool) MessagePath(id string) string { return filepath.Join(s.msgDir, id) }

func (s *Spool) envPath(id string) string { return filepath.Join(s.envDir, id) }

// List returns the envelopes of every committed message, oldest first.
func (s *Spool) List() ([]*Envelope, error) {
	names, err := readNames(s.envDir)
	if err != nil {
		return nil, fmt.Errorf("spool: list: %w", err)
	}
	slices.Sort(names)
	envs := make([]*Envelope, 0, len(names))
	for _, id := range names {
		if !ValidID(id) {
			continue
		}
		env, err := s.Load(id)
		if errors.Is(err, fs.ErrNotExist) {
			continue // removed since readNames
		}
		if err != nil {
			return nil, fmt.Errorf("spool: list: %w", err)
		}
		envs = append(envs, env)
	}
	return envs, nil
}

// Load returns the envelope of one message. The error wraps
// fs.ErrNotExist if there is no committed message id.
func (s *Spool) Load(id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: load %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	b, err := os.ReadFile(s.envPath(id))
	if err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	env := new(Envelope)
	if err := json.Unmarshal(b, env); err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	return env, nil
}

// OpenMessage returns the message bytes. The error wraps fs.ErrNotExist if
// there is no message id.
func (s *Spool) OpenMessage(id string) (io.ReadSeekCloser, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: open %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	f, err := os.Open(s.MessagePath(id))
	if err != nil {
		return nil, fmt.Errorf("spool: open message %s: %w", id, err)
	}
	return f, nil
}

// Update durably replaces the envelope of a committed message: once it
// returns nil the new envelope survives a crash, and a crash before leaves
// the old one, never a mix. The error wraps fs.ErrNotExist if the message
// is not (or no longer) committed.
func (s *Spool) Update(env *Envelope) error {
	if !ValidID(env.ID) {
		return fmt.Errorf("spool: update %q: invalid queue ID: %w", env.ID, fs.ErrNotExist)
	}
	mu := s.idLock(env.ID)
	mu.Lock()
	defer mu.Unlock()
	if _, err := os.Stat(s.envPath(env.ID)); err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	f, err := s.writeEnvelope(env)
	if err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	j := &job{id: env.ID, env: f, done: make(chan error, 1)}
	if err := s.submit(j); err != nil {
		s.discard(j)
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	if err := <-j.done; err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	return nil
}

// Remove deletes a message and its envelope. The envelope goes first: from
// then on the message is not committed, and a crash leaves a file that
// recovery removes.
func (s *Spool) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: remove %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	mu := s.idLock(id)
	mu.Lock()
	defer mu.Unlock()
	if err := os.Remove(s.envPath(id)); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.Remove(s.MessagePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	return nil
}

func (s *Spool) idLock(id string) *sync.Mutex {
	return &s.idLocks[maphash.String(s.seed, id)%uint64(len(s.idLocks))]
}

// writeEnvelope writes env to a new file in tmp/ and returns it open, for
// the committer to flush and rename into env/.
func (s *Spool) writeEnvelope(env *Envelope) (*os.File, error) {
	b, err := json.Marshal(env)
	if err != nil {
		return nil, err
	}
	f, err := os.CreateTemp(s.tmpDir, env.ID+".env.*")
	if err != nil {
		return nil, err
	}
	if s.opts.FailWrites != nil {
		err = s.opts.FailWrites()
	}
	if err == nil {
		_, err = f.Write(b)
	}
	if err != nil {
		f.Close()
		os.Remove(f.Name())
		return nil, fmt.Errorf("write envelope: %w", err)
	}
	return f, nil
}

// Close waits for the commits already submitted, then stops the committer.
// Messages not committed yet stay on disk until they are aborted or the
// next recovery.
func (s *Spool) Close() error {
	s.mu.Lock()
	already := s.closed
	s.closed = true
	s.mu.Unlock()
	if already {
		return ErrClosed
	}
	s.signal()
	<-s.stopped
	return s.closeFiles()
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{s.msgDirF, s.envDirF, s.lock} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}
