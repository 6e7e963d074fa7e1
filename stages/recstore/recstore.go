// Package recstore is the embedded store of small state records on one
// node: the greylisting triplets of stages/greylist and the pre-greet
// cache of gateway/smtpd keep theirs in it, each in a directory of its
// own under data_dir. A record is a hashed key with a few times, a flag
// and a count, whose meaning its user gives; it lives until it expires.
// A store shared by a cluster (Redis: a key per record, Expires its
// expiry) can take the place of the embedded one behind Store.
package recstore

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/stages/durable"
)

// Key names one record: a hash of what it is about. A hash keeps records
// one size whatever they are about (a bounded cost per record) and keeps
// addresses out of the files.
type Key [16]byte

// HashKey is the key of s. Users tag s with what kind of record it names
// (greylist: "t\x00"+triplet, "n\x00"+network), so that two kinds never
// share a key.
func HashKey(s string) Key {
	sum := sha256.Sum256([]byte(s))
	var k Key
	copy(k[:], sum[:])
	return k
}

// Record is what the store keeps under a key; what each field means is
// its user's (see stages/greylist and gateway/smtpd's pre-greet cache).
type Record struct {
	First, Last time.Time
	Passed      bool
	Count       uint32
	// Expires is when the record is of no more use and its room may be
	// taken by another: a store drops it then, and not before unless it
	// runs out of room.
	Expires time.Time
}

// Store keeps records. Get and Put are not one atomic step: users must
// bear two writers of one key racing (greylist: both record a first
// sighting a moment apart).
type Store interface {
	// Get returns the record of k; ok is false when there is none.
	Get(ctx context.Context, k Key) (r Record, ok bool, err error)
	// Put stores r as the record of k.
	Put(ctx context.Context, k Key, r Record) error
	// Delete removes the record of k, if any.
	Delete(ctx context.Context, k Key) error
}

// The embedded store is a directory of bucket files. A key's first 12
// bits choose its bucket; a bucket is an array of fixed-size records,
// each with its own checksum, read whole and written one record in place
// under an exclusive flock. So:
//   - nothing is held in memory between calls: memory is one bucket's
//     bytes per call, whatever the number of records;
//   - the disk is bounded: a bucket holds at most perBucket records, a new
//     record takes the room of an expired one first, then of the one that
//     expires soonest (greylist: an old unpassed triplet before a passed
//     one);
//   - two processes may share the files (greylist: the old plugin process
//     still answering after a reload and the new one): each locks the
//     bucket around its read and write, and they see each other's records
//     at once;
//   - a record torn by a crash, or garbage, fails its checksum and is
//     dropped, zeroed in place, and counted: what it was about starts
//     over, nothing else is lost. Only a format file of another kind or
//     version is refused, since the files are then not ours to rewrite.
//
// Records are not synced to disk one by one: a power failure may lose the
// last ones written (greylist: their senders wait one more delay).

const (
	recordSize = 64
	bucketBits = 12
	buckets    = 1 << bucketBits
	// formatFile names the store's kind and version: formatLine.
	formatFile = "format"
	// usedMark is the first byte of a record in use; a free one is zero.
	usedMark = 0xa7
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// slotState is what a record slot of a bucket holds.
type slotState uint8

const (
	slotFree    slotState = iota // all zero: never used, or deleted
	slotUsed                     // a record with a good checksum
	slotCorrupt                  // anything else
)

// encodeRecord writes the 64 bytes of a record:
//
//	0      usedMark
//	1      flags: 1 = passed
//	2-3    zero
//	4-7    count, little-endian
//	8-23   key
//	24-47  first, last, expires: Unix nanoseconds, 0 for none
//	48-59  zero
//	60-63  CRC-32C of bytes 0-59
func encodeRecord(k Key, r Record) [recordSize]byte {
	var b [recordSize]byte
	b[0] = usedMark
	if r.Passed {
		b[1] = 1
	}
	binary.LittleEndian.PutUint32(b[4:], r.Count)
	copy(b[8:24], k[:])
	binary.LittleEndian.PutUint64(b[24:], uint64(unixNano(r.First)))
	binary.LittleEndian.PutUint64(b[32:], uint64(unixNano(r.Last)))
	binary.LittleEndian.PutUint64(b[40:], uint64(unixNano(r.Expires)))
	binary.LittleEndian.PutUint32(b[60:], crc32.Checksum(b[:60], crcTable))
	return b
}

// decodeRecord reads one record slot. A record decodes only if it is
// exactly what encodeRecord writes, so a slot is used, free, or corrupt.
func decodeRecord(b []byte) (Key, Record, slotState) {
	var k Key
	if len(b) != recordSize {
		return k, Record{}, slotCorrupt
	}
	if b[0] == 0 {
		if bytes.Count(b, []byte{0}) == recordSize {
			return k, Record{}, slotFree
		}
		return k, Record{}, slotCorrupt
	}
	if b[0] != usedMark || b[1] > 1 || b[2] != 0 || b[3] != 0 || bytes.Count(b[48:60], []byte{0}) != 12 ||
		binary.LittleEndian.Uint32(b[60:]) != crc32.Checksum(b[:60], crcTable) {
		return k, Record{}, slotCorrupt
	}
	copy(k[:], b[8:24])
	r := Record{
		Passed:  b[1] == 1,
		Count:   binary.LittleEndian.Uint32(b[4:]),
		First:   fromUnixNano(int64(binary.LittleEndian.Uint64(b[24:]))),
		Last:    fromUnixNano(int64(binary.LittleEndian.Uint64(b[32:]))),
		Expires: fromUnixNano(int64(binary.LittleEndian.Uint64(b[40:]))),
	}
	return k, r, slotUsed
}

func unixNano(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNano(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n)
}

// File is the embedded Store.
type File struct {
	dir        string
	kind       string // what the store holds, for its format file and errors
	formatLine string
	perBucket  int              // records a bucket holds at most
	now        func() time.Time // the user's clock, for expiry
	// corrupt and full are told how many records of a bucket file were
	// dropped as corrupt, or taken before their time for want of room.
	corrupt func(file string, n int)
	full    func(file string)
	// ready is set once the format file is checked or written; until
	// then (a directory not yet writable at start) each call tries again.
	ready atomic.Bool
}

var _ Store = (*File)(nil)

// Options are what Open needs besides the directory.
type Options struct {
	// Kind names what the store holds ("greylist"): its format file says
	// "mailgate <kind> store 1", and errors name it.
	Kind string
	// MaxRecords bounds the store: its files never hold more.
	MaxRecords int
	// Now is the user's clock, for expiry.
	Now func() time.Time
	// Corrupt and Full, if set, are told how many records of a bucket
	// file were dropped as corrupt, and when a record was taken before
	// it expired for want of room.
	Corrupt func(file string, n int)
	Full    func(file string)
}

// Open opens or creates the store in dir. It fails for a directory that
// holds a store of another kind or format (ErrFormat); with any other
// error (a directory that cannot be created or written) it returns the
// store all the same, whose every call tries again: the caller judges
// whether to fail open meanwhile, as greylisting does.
func Open(dir string, o Options) (*File, error) {
	s := &File{
		dir:        dir,
		kind:       o.Kind,
		formatLine: "mailgate " + o.Kind + " store 1\n",
		perBucket:  max(1, (o.MaxRecords+buckets-1)/buckets),
		now:        o.Now,
		corrupt:    o.Corrupt,
		full:       o.Full,
	}
	if s.corrupt == nil {
		s.corrupt = func(string, int) {}
	}
	if s.full == nil {
		s.full = func(string) {}
	}
	return s, s.checkFormat()
}

// ErrFormat marks a directory holding something else than the store
// asked for.
var ErrFormat = errors.New("not a store of this kind and version")

func (s *File) checkFormat() error {
	if s.ready.Load() {
		return nil
	}
	err := s.readFormat()
	if err == nil {
		s.ready.Store(true)
	}
	return err
}

func (s *File) readFormat() error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("create %s store: %w", s.kind, err)
	}
	name := filepath.Join(s.dir, formatFile)
	b, err := os.ReadFile(name)
	if errors.Is(err, fs.ErrNotExist) {
		// A new store. Written whole, so that a crash leaves no
		// half-written format file to refuse.
		if err := durable.WriteFile(name, []byte(s.formatLine), ""); err != nil {
			return fmt.Errorf("create %s store: %w", s.kind, err)
		}
		return nil
	}
	if err != nil {
		return fmt.Errorf("read %s store: %w", s.kind, err)
	}
	if string(b) != s.formatLine {
		return fmt.Errorf("%s: %w: it reads %.40q, expect %q; move the directory away to start with an empty store", name, ErrFormat, b, s.formatLine)
	}
	return nil
}

// Path is the file that holds k's record.
func (s *File) Path(k Key) string {
	return filepath.Join(s.dir, fmt.Sprintf("%03x", int(k[0])<<4|int(k[1]>>4)))
}

// bucket is one bucket file, open and locked, with its records read.
type bucket struct {
	f     *os.File
	name  string
	data  []byte // the slots read: at most perBucket
	extra bool   // the file holds more than perBucket slots (max_entries lowered)
}

func (b *bucket) slots() int { return len(b.data) / recordSize }

func (b *bucket) slot(i int) []byte { return b.data[i*recordSize : (i+1)*recordSize] }

// open opens and locks the bucket of k and reads its slots; corrupt ones
// are zeroed in the file and reported.
func (s *File) open(k Key) (*bucket, error) {
	if err := s.checkFormat(); err != nil {
		return nil, err
	}
	name := s.Path(k)
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%s store: %w", s.kind, err)
	}
	// flock, not fcntl locks: they belong to the open file, so two
	// goroutines of one process exclude each other as two processes do.
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s store: lock %s: %w", s.kind, name, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s store: %w", s.kind, err)
	}
	n := int(min(fi.Size()/recordSize, int64(s.perBucket)))
	b := &bucket{f: f, name: name, data: make([]byte, n*recordSize), extra: fi.Size() > int64(s.perBucket)*recordSize}
	if m, err := f.ReadAt(b.data, 0); err != nil && !(errors.Is(err, io.EOF) && m == len(b.data)) {
		f.Close()
		return nil, fmt.Errorf("%s store: read %s: %w", s.kind, name, err)
	}
	var bad int
	zero := make([]byte, recordSize)
	for i := range b.slots() {
		if _, _, st := decodeRecord(b.slot(i)); st == slotCorrupt {
			bad++
			copy(b.slot(i), zero)
			// Best effort: a slot left corrupt is dropped again next time.
			f.WriteAt(zero, int64(i*recordSize))
		}
	}
	if bad > 0 {
		s.corrupt(name, bad)
	}
	return b, nil
}

func (b *bucket) close() error { return b.f.Close() } // closing drops the lock

// find returns the slot holding k, or -1.
func (b *bucket) find(k Key) (int, Record) {
	for i := range b.slots() {
		if rk, r, st := decodeRecord(b.slot(i)); st == slotUsed && rk == k {
			return i, r
		}
	}
	return -1, Record{}
}

func expired(r Record, now time.Time) bool { return !r.Expires.IsZero() && !now.Before(r.Expires) }

func (s *File) Get(_ context.Context, k Key) (Record, bool, error) {
	b, err := s.open(k)
	if err != nil {
		return Record{}, false, err
	}
	defer b.close()
	i, r := b.find(k)
	if i < 0 || expired(r, s.now()) {
		return Record{}, false, nil
	}
	return r, true, nil
}

func (s *File) Put(_ context.Context, k Key, r Record) error {
	b, err := s.open(k)
	if err != nil {
		return err
	}
	i, _ := b.find(k)
	if i < 0 {
		i = s.room(b)
	}
	rec := encodeRecord(k, r)
	if _, err := b.f.WriteAt(rec[:], int64(i*recordSize)); err != nil {
		b.close()
		return fmt.Errorf("%s store: write %s: %w", s.kind, b.name, err)
	}
	if b.extra {
		// max_entries was lowered: the slots past the bound are dropped.
		if err := b.f.Truncate(int64(s.perBucket) * recordSize); err != nil {
			b.close()
			return fmt.Errorf("%s store: truncate %s: %w", s.kind, b.name, err)
		}
	}
	if err := b.close(); err != nil {
		return fmt.Errorf("%s store: write %s: %w", s.kind, b.name, err)
	}
	return nil
}

// room returns the slot a new record takes: a free or expired one, a new
// one at the end while the bucket has room, or else the record that
// expires first, which is reported.
func (s *File) room(b *bucket) int {
	now := s.now()
	victim, soonest := -1, time.Time{}
	for i := range b.slots() {
		_, r, st := decodeRecord(b.slot(i))
		if st != slotUsed || expired(r, now) {
			return i
		}
		if victim < 0 || r.Expires.Before(soonest) {
			victim, soonest = i, r.Expires
		}
	}
	if b.slots() < s.perBucket {
		return b.slots()
	}
	s.full(b.name)
	return victim
}

func (s *File) Delete(_ context.Context, k Key) error {
	b, err := s.open(k)
	if err != nil {
		return err
	}
	if i, _ := b.find(k); i >= 0 {
		if _, err := b.f.WriteAt(make([]byte, recordSize), int64(i*recordSize)); err != nil {
			b.close()
			return fmt.Errorf("%s store: write %s: %w", s.kind, b.name, err)
		}
	}
	return b.close()
}
