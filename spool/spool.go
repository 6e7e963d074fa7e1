// Package spool is the durable queue on disk. A message is written to the
// spool while it is read from the client, and it is acknowledged (250) only
// after Commit returns, when message and envelope are on stable storage.
//
// # On-disk layout
//
//	<dir>/lock       flock: held exclusively by the process that writes
//	<dir>/msg/<id>   message bytes, written in place from Create on
//	<dir>/env.log    envelope log: commit, update and remove records
//	<dir>/tmp/       large rewritten messages and the next log being written
//
// An <id> is a queue ID: 16 characters of base32hex (0-9, A-V) encoding
// the creation time in milliseconds and 32 random bits, so IDs sort by time.
//
// Envelopes live in one append-only log rather than a file each: creating,
// renaming and deleting a file per envelope cost more CPU than anything
// else the spool did (see BenchmarkLifecycleParallel). Records carry a
// length and a CRC-32C, so a record cut short by a crash is detected and
// ignored; the format is in log.go.
//
// A message is committed exactly when the log holds its commit record.
// A message of up to inlineMax bytes (64 KiB) is in its commit record
// too, an inline commit: its file is written but not flushed, and one
// append of the batch's records to the log and one fdatasync make message
// and envelope durable. A larger one's Commit fsyncs its file, and the
// group committer then flushes the files' directory entries (an fsync of
// msg/) before that append. So a commit record never reaches the disk
// before its message, and after a nil Commit a kill -9 or a power loss
// does not lose the message: recovery writes the file of an inline
// commit again if the crash lost or tore it, and a compaction flushes
// the files of inline commits before the new log drops their bytes.
// Update appends an update record the same way; replay keeps the last
// record of each ID, so a crash leaves the old or the new envelope,
// never a mix.
//
// A Commit that fails because the log's flush failed may have reached
// the disk all the same: nothing more is written to the log until a
// restart, whose recovery cannot tell that batch from one flushed just
// before a crash. An inline commit of it comes back from its record and
// is delivered, while the client, told to try again, sends the message a
// second time: a duplicate, never a loss (RFC 5321 §6.1). A larger
// message's file was removed with the failure, and recovery drops its
// record.
//
// Remove appends a remove record and deletes the message file without
// waiting for a flush: after a power loss a removed message may come back
// and be delivered twice, but it is never lost. Note, the mark of a
// delivery done, is written the same way and for the same reason: as
// soon as the next hop's 250 is read, so that a process crash repeats
// only the deliveries still under way, not those that wait for the next
// flush.
//
// Recovery (Open) replays the log, removes tmp/, every msg/<id> the log
// does not commit (never committed, or aborted) and every envelope whose
// message file is gone (a Remove cut short), and writes the live records
// into a new log. The same compaction runs when removed and replaced
// records outnumber the live ones by far: the new log is written in tmp/,
// flushed, and renamed over the old one, so a crash leaves one or the
// other whole. While it runs, the log is written in the background from a
// snapshot of the live set; commits go on meanwhile, and only the swap,
// which carries over the records appended since the snapshot, holds them
// up (see compaction in recover.go).
//
// One process writes a spool at a time.
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
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/stages/durable"
	"golang.org/x/sys/unix"
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

// NewEnvelope is the envelope of a message taken now, from the client
// named, for delivery to each of rcpts; max_age counts from now.
func NewEnvelope(from string, rcpts []string, clientAddr, clientHelo, messageID string) *Envelope {
	env := &Envelope{From: from, Received: time.Now().UTC(), ClientAddr: clientAddr, ClientHelo: clientHelo, MessageID: messageID}
	for _, r := range rcpts {
		env.Rcpts = append(env.Rcpts, Recipient{Addr: r, Status: Pending})
	}
	return env
}

// ErrClosed is returned by calls on a closed Spool.
var ErrClosed = errors.New("spool: closed")

// ErrNotFound is returned by the operator's calls on the queue (the
// router's) for a queue ID it does not hold.
var ErrNotFound = errors.New("no such message in the queue")

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
	// FailReads, if set, is called before List and Load read envelopes; a
	// non-nil error is returned in their place, so that tests of callers
	// can simulate a spool that cannot be read.
	FailReads func() error
	// FreeSpace, if set, replaces the file system's answer in Free, so
	// that tests of callers can simulate a nearly full disk.
	FreeSpace func() (int64, error)
}

// compactMin is the number of dead records (replaced or removed) below
// which the log is not compacted, however few messages are live. Its swap
// holds every commit for an fsync of the new log, a rename and an fsync
// of the spool's directory: 2 to 10 ms on the bench's VM, where the
// messages around each swap at half peak took 2 to 6 ms longer. At 1,024
// that came about every 400 messages; now about as often as inline
// records compact the log anyway (inlineGrowth, some 13,000 messages of
// 5 KiB), and recovery typically replays some tens of thousands of
// records, tens of milliseconds.
const compactMin = 32768

// inlineMax is the largest message whose commit record carries its bytes
// (Writer.Commit), and inlineGrowth how much the log may grow by such
// records before a compaction flushes their files and drops them.
const (
	inlineMax    = 64 << 10
	inlineGrowth = 64 << 20
)

// Spool is a directory of queued messages. Its methods are safe for
// concurrent use.
type Spool struct {
	dir, msgDir, tmpDir string
	opts                Options
	lock                *os.File // holds the flock until Close
	msgDirF             *os.File // msg/, fsynced for the directory entries of new files
	ids                 idGen

	// The directory entries of new message files are made durable ahead
	// of their commit (dirSyncLoop): entries counts the entries made in
	// msg/ (files created, rewrites renamed in), dirDurable how many of
	// the first of them a finished fsync of msg/ covers.
	entries    atomic.Uint64
	dirDurable atomic.Uint64
	dirErr     atomic.Pointer[error] // the first failed fsync of msg/
	dirMu      sync.Mutex            // one fsync of msg/ at a time (syncMsgDir)
	// fsyncMsgDir is msgDirF.Sync; tests make it fail or count it.
	fsyncMsgDir func() error
	dirWake     chan struct{} // one token: an entry was made
	dirStop     chan struct{} // closed by Close
	dirStopped  chan struct{} // closed when dirSyncLoop has returned

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

	// The envelope log of a writing spool.
	logMu       sync.Mutex
	log         *os.File // nil once closed
	gen         uint64   // the log file's generation
	seq         uint64   // the seq of the next record
	size        int64    // bytes in the log
	durable     uint64   // every record below this seq is on stable storage
	x           index    // what the durable records say
	logErr      error    // the log's state is unknown; nothing more is written
	compactMin  int
	nextCompact int  // dead records that trigger the next compaction
	compacting  bool // a compaction is under way
	// compactedSize is the log's size after the last compaction (or the
	// last failed one): inline records compact it once it grows past.
	compactedSize int64

	// A compaction writes its new log in the background and hands it to
	// the committer, which swaps it in between flushes.
	compacted chan compactResult
	compactWG sync.WaitGroup

	syncDir     func(dir string) error // durable.Sync; tests make it fail
	syncFile    func(*os.File) error   // (*os.File).Sync of a compaction's inline files; tests count them
	compactStep func(step string)      // nil; tests stop a compaction at a step
}

// Open opens (creating it if needed) the spool under dir and recovers from a
// crash: files of messages that were never committed are removed.
func Open(dir string) (*Spool, error) { return OpenWith(dir, Options{}) }

// OpenWith is Open with options.
//
// Only one process opens a spool: it holds an exclusive flock on
// <dir>/lock, which a process that dies drops with it. Open fails while
// another process has it.
func OpenWith(dir string, opts Options) (*Spool, error) {
	s := newSpool(dir, opts)
	if err := s.open(); err != nil {
		return nil, err
	}
	return s, nil
}

// newSpool is a Spool not yet opened: tests set their hooks on it before
// open recovers. A Spool whose open failed is unusable: drop it, do not
// Close it (no committer runs to stop).
func newSpool(dir string, opts Options) *Spool {
	s := &Spool{
		dir:        dir,
		msgDir:     filepath.Join(dir, "msg"),
		tmpDir:     filepath.Join(dir, "tmp"),
		opts:       opts,
		seed:       maphash.MakeSeed(),
		inPlace:    make(chan struct{}, inPlaceSlots),
		wake:       make(chan struct{}, 1),
		stopped:    make(chan struct{}),
		dirWake:    make(chan struct{}, 1),
		dirStop:    make(chan struct{}),
		dirStopped: make(chan struct{}),
		compactMin: compactMin,
		compacted:  make(chan compactResult, 1),
		syncDir:    durable.Sync,
		syncFile:   (*os.File).Sync,
	}
	s.nextCompact = s.compactMin
	return s
}

// open takes the spool's lock, recovers, and starts the committer.
func (s *Spool) open() error {
	for _, d := range []string{s.msgDir, s.tmpDir} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return fmt.Errorf("open spool: %w", err)
		}
	}
	if err := s.lockDir(); err != nil {
		return fmt.Errorf("open spool %s: %w", s.dir, err)
	}
	err := s.recover()
	if err == nil {
		s.msgDirF, err = os.Open(s.msgDir)
	}
	if err == nil {
		s.fsyncMsgDir = s.msgDirF.Sync
	}
	if err != nil {
		if s.log != nil {
			s.log.Close()
		}
		s.closeFiles()
		return fmt.Errorf("open spool %s: %w", s.dir, err)
	}
	go s.commitLoop()
	go s.dirSyncLoop()
	return nil
}

// lockDir takes the writer's flock, or fails if another process has it.
func (s *Spool) lockDir() error {
	path := filepath.Join(s.dir, "lock")
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if errors.Is(err, syscall.EWOULDBLOCK) {
		err = errors.New("another process has the spool open for writing (a reader next to it opens it read-only)")
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("lock %s: %w", path, err)
	}
	s.lock = f
	return nil
}

// ReadIDs returns the queue IDs that name files in dir, each followed by
// suffix (the quarantine's ".eml", ".json"); other names are not the
// caller's and are left alone.
func ReadIDs(dir, suffix string) (map[string]bool, error) {
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	ids := make(map[string]bool, len(names))
	for _, n := range names {
		if id, ok := strings.CutSuffix(n, suffix); ok && ValidID(id) {
			ids[id] = true
		}
	}
	return ids, err
}

// Create starts a new message; its queue ID is fixed from here on.
func (s *Spool) Create() (*Writer, error) {
	if s.isClosed() {
		return nil, ErrClosed
	}
	for {
		id := s.ids.next(time.Now())
		path := filepath.Join(s.msgDir, id)
		// Read and write: Commit reads a small message back for its record.
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if errors.Is(err, fs.ErrExist) {
			continue // only after the clock went back; the next ID is higher
		}
		if err != nil {
			return nil, fmt.Errorf("spool: create message: %w", err)
		}
		w := newWriter(s, id, path, f)
		w.entry = s.newEntry(0)
		return w, nil
	}
}

// MessagePath is the file that holds the bytes of message id, for a reader
// in another process. It must be opened read-only.
func (s *Spool) MessagePath(id string) string { return filepath.Join(s.msgDir, id) }

// view calls fn with the envelopes (JSON) of the committed messages. fn
// must not keep or change them.
func (s *Spool) view(fn func(live map[string][]byte)) error {
	if fail := s.opts.FailReads; fail != nil {
		if err := fail(); err != nil {
			return err
		}
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	fn(s.x.live)
	return nil
}

// List returns the envelopes of every committed message, oldest first.
func (s *Spool) List() ([]*Envelope, error) {
	type entry struct {
		id string
		js []byte
	}
	var all []entry
	err := s.view(func(live map[string][]byte) {
		all = make([]entry, 0, len(live))
		for id, js := range live {
			all = append(all, entry{id, js})
		}
	})
	if err != nil {
		return nil, fmt.Errorf("spool: list: %w", err)
	}
	slices.SortFunc(all, func(a, b entry) int { return strings.Compare(a.id, b.id) })
	envs := make([]*Envelope, len(all))
	for i, e := range all {
		envs[i] = new(Envelope)
		if err := json.Unmarshal(e.js, envs[i]); err != nil {
			return nil, fmt.Errorf("spool: list: %s: %w", e.id, err)
		}
	}
	return envs, nil
}

// Load returns the envelope of one message. The error wraps
// fs.ErrNotExist if there is no committed message id.
func (s *Spool) Load(id string) (*Envelope, error) {
	if !ValidID(id) {
		return nil, fmt.Errorf("spool: load %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	var js []byte
	err := s.view(func(live map[string][]byte) { js = live[id] })
	if err != nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, err)
	}
	if js == nil {
		return nil, fmt.Errorf("spool: load %s: %w", id, fs.ErrNotExist)
	}
	env := new(Envelope)
	if err := json.Unmarshal(js, env); err != nil {
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
	if !s.isLive(env.ID) {
		return fmt.Errorf("spool: update %s: %w", env.ID, fs.ErrNotExist)
	}
	js, err := s.encode(env)
	if err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	j := &job{id: env.ID, js: js, done: make(chan error, 1)}
	if err := s.submit(j); err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	if err := <-j.done; err != nil {
		return fmt.Errorf("spool: update %s: %w", env.ID, err)
	}
	return nil
}

// Progress is what Note records of a message's delivery.
type Progress struct {
	// Rcpts are recipients that reached their final state, Delivered
	// or Failed.
	Rcpts []Outcome `json:"rcpts,omitempty"`
	// DSNSent says the DSN for the Failed recipients is queued.
	DSNSent bool `json:"dsn_sent,omitempty"`
}

// Outcome is the final state of one recipient, Envelope.Rcpts[Rcpt].
type Outcome struct {
	Rcpt      int        `json:"rcpt"`
	Status    RcptStatus `json:"status"`
	LastReply string     `json:"last_reply,omitempty"`
	LastHost  string     `json:"last_host,omitempty"`
	Updated   time.Time  `json:"updated,omitzero"`
}

// Note records delivery progress of a committed message the moment it is
// known, with a write to the log and no flush: a process crash from then
// on keeps it (the kernel has the bytes), a power loss may not, and then
// the recipients are delivered again, never lost. The router notes each
// reply of the next hop as soon as it reads it, and later stores the
// whole envelope with Update or removes the message; without the note a
// kill -9 in between would deliver those recipients a second time. The
// error wraps fs.ErrNotExist if the message is not (or no longer)
// committed.
func (s *Spool) Note(id string, p Progress) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: note %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	for _, o := range p.Rcpts {
		if o.Status != Delivered && o.Status != Failed {
			return fmt.Errorf("spool: note %s: recipient %d: status %q is not final", id, o.Rcpt, o.Status)
		}
	}
	patch, err := json.Marshal(p)
	if err == nil {
		if fail := s.opts.FailWrites; fail != nil {
			err = fail()
		}
	}
	if err != nil {
		return fmt.Errorf("spool: note %s: %w", id, err)
	}
	// Under the ID's lock no Update or Remove of the message is under
	// way, so the envelope the note applies to stays the live one.
	mu := s.idLock(id)
	mu.Lock()
	defer mu.Unlock()
	s.logMu.Lock()
	old, ok := s.x.live[id]
	s.logMu.Unlock()
	if !ok {
		return fmt.Errorf("spool: note %s: %w", id, fs.ErrNotExist)
	}
	js, err := applyNote(old, patch)
	if err != nil {
		return fmt.Errorf("spool: note %s: %w", id, err)
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	b := appendRecord(nil, s.gen, s.seq, s.durable, opNote, id, patch, nil)
	if err := s.appendLog(b); err != nil {
		return fmt.Errorf("spool: note %s: %w", id, err)
	}
	s.seq++
	s.x.records++
	s.x.live[id] = js
	return nil
}

// applyNote returns the envelope js with the Progress patch applied.
func applyNote(js, patch []byte) ([]byte, error) {
	var env Envelope
	var p Progress
	if err := json.Unmarshal(js, &env); err != nil {
		return nil, fmt.Errorf("envelope: %w", err)
	}
	if err := json.Unmarshal(patch, &p); err != nil {
		return nil, fmt.Errorf("note: %w", err)
	}
	for _, o := range p.Rcpts {
		if o.Rcpt < 0 || o.Rcpt >= len(env.Rcpts) {
			return nil, fmt.Errorf("note: recipient %d of %d", o.Rcpt, len(env.Rcpts))
		}
		rc := &env.Rcpts[o.Rcpt]
		rc.Status, rc.LastReply, rc.LastHost, rc.Updated = o.Status, o.LastReply, o.LastHost, o.Updated
	}
	if p.DSNSent {
		env.DSNSent = true
	}
	return json.Marshal(&env)
}

func (s *Spool) isLive(id string) bool {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	_, ok := s.x.live[id]
	return ok
}

// Remove deletes a message and its envelope. The remove record goes
// first: from then on the message is not committed, and a crash leaves a
// file that recovery removes.
func (s *Spool) Remove(id string) error {
	if !ValidID(id) {
		return fmt.Errorf("spool: remove %q: invalid queue ID: %w", id, fs.ErrNotExist)
	}
	mu := s.idLock(id)
	mu.Lock()
	defer mu.Unlock()
	if err := s.appendRemove(id); err != nil {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	if err := os.Remove(s.MessagePath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("spool: remove %s: %w", id, err)
	}
	return nil
}

// appendRemove appends the remove record of id, without a flush (see the
// package comment).
func (s *Spool) appendRemove(id string) error {
	s.logMu.Lock()
	defer s.logMu.Unlock()
	if _, ok := s.x.live[id]; !ok {
		return fs.ErrNotExist
	}
	b := appendRecord(nil, s.gen, s.seq, s.durable, opRemove, id, nil, nil)
	if err := s.appendLog(b); err != nil {
		return err
	}
	s.seq++
	s.x.records++
	delete(s.x.live, id)
	delete(s.x.inline, id)
	return nil
}

func (s *Spool) idLock(id string) *sync.Mutex {
	return &s.idLocks[maphash.String(s.seed, id)%uint64(len(s.idLocks))]
}

// encode is the JSON of env for its log record.
func (s *Spool) encode(env *Envelope) ([]byte, error) {
	if fail := s.opts.FailWrites; fail != nil {
		if err := fail(); err != nil {
			return nil, fmt.Errorf("write envelope: %w", err)
		}
	}
	return json.Marshal(env)
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
	close(s.dirStop)
	<-s.dirStopped
	// A compaction still being written is dropped; the old log is whole.
	s.compactWG.Wait()
	select {
	case r := <-s.compacted:
		r.c.discard()
	default:
	}
	s.logMu.Lock()
	if len(s.x.inline) > 0 && s.logErr == nil {
		// A log without inline records, which a version before them
		// reads too (a downgrade after a clean stop). Best effort: on a
		// failure the old log is whole, for this version.
		s.compact()
	}
	err := s.log.Close()
	s.log = nil
	s.logMu.Unlock()
	if err := errors.Join(err, s.closeFiles()); err != nil {
		return fmt.Errorf("spool: close: %w", err)
	}
	return nil
}

func (s *Spool) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

func (s *Spool) closeFiles() error {
	var errs []error
	for _, f := range []*os.File{s.msgDirF, s.lock} {
		if f != nil {
			errs = append(errs, f.Close())
		}
	}
	return errors.Join(errs...)
}

// Free returns the bytes the spool's file system has free for it: those
// an unprivileged process may use (statfs f_bavail), as the blocks
// reserved for root are not to be counted on.
func (s *Spool) Free() (int64, error) {
	if f := s.opts.FreeSpace; f != nil {
		return f()
	}
	var st unix.Statfs_t
	if err := unix.Statfs(s.msgDir, &st); err != nil {
		return 0, fmt.Errorf("spool: statfs %s: %w", s.msgDir, err)
	}
	return int64(st.Bavail) * st.Bsize, nil
}

// Err returns why the spool cannot commit anything more until a restart
// (its envelope log failed to flush or to cut back a failed append, or an
// fsync of the message directory failed), or nil. The gateway's health
// check reports it.
func (s *Spool) Err() error {
	if err := s.dirErr.Load(); err != nil {
		return fmt.Errorf("fsync msg/: %w", *err)
	}
	s.logMu.Lock()
	defer s.logMu.Unlock()
	return s.logErr
}
