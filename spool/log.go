package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"slices"
)

// The envelope log is a file header and then records:
//
//	header:  "MGENVLOG" | gen (8 bytes)
//	record:  gen (8) | seq (8) | durable (8) | len (4) | CRC-32C (4) | payload (len)
//	payload: "commit <id> <json>" | "update <id> <json>" | "remove <id>"
//	         | "note <id> <json of a Progress>"
//	         | "inline <id> <json>\n<message bytes>"
//
// Integers are big-endian; the CRC covers the 28 header bytes before it and
// the payload. gen is random for each log file and seq counts its records
// from 1, so that stale bytes of an earlier log (on a file system without
// a journal, a crash can expose old blocks at the end of a file) never
// pass for records of this one. durable says that every record with a
// lower seq was on stable storage when this record was written.
//
// An inline record is a commit that carries the message's bytes (JSON
// holds no raw newline, so the first one ends the envelope): its file was
// not flushed, and recovery writes it again from the record if it is
// missing or differs (see Writer.Commit).
//
// A crash can leave any part of what was appended after the last fdatasync
// unwritten, so replay stops at the first record that is not whole. That
// is a torn tail, and nothing in it was acknowledged, if no whole record
// after it claims it was durable; if one does, the log was damaged after
// it was written and recovery refuses to guess (see replayFile).
const (
	logName      = "env.log"
	logMagic     = "MGENVLOG"
	logHeaderLen = len(logMagic) + 8
	recHeaderLen = 32
	// maxRecordLen bounds a record: an envelope is a few KB even with
	// many recipients, so a larger length is damage, not data.
	maxRecordLen = 64 << 20

	opCommit = "commit"
	opUpdate = "update"
	opRemove = "remove"
	opNote   = "note"
	opInline = "inline"
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func logHeader(gen uint64) []byte {
	return binary.BigEndian.AppendUint64([]byte(logMagic), gen)
}

// appendRecord appends one record to b: op and id, then js unless it is
// nil (a remove), then for an inline commit (msg not nil) a newline and
// the message's bytes.
func appendRecord(b []byte, gen, seq, durable uint64, op, id string, js, msg []byte) []byte {
	start := len(b)
	b = slices.Grow(b, recHeaderLen+len(op)+1+len(id)+1+len(js)+1+len(msg))
	b = b[:start+recHeaderLen]
	b = append(b, op...)
	b = append(b, ' ')
	b = append(b, id...)
	if js != nil {
		b = append(b, ' ')
		b = append(b, js...)
	}
	if msg != nil {
		b = append(b, '\n')
		b = append(b, msg...)
	}
	return seal(b, start, gen, seq, durable)
}

// appendPayload appends a record with the payload of a decoded one, to
// carry it into another log.
func appendPayload(b []byte, gen, seq, durable uint64, payload []byte) []byte {
	start := len(b)
	b = slices.Grow(b, recHeaderLen+len(payload))
	b = append(b[:start+recHeaderLen], payload...)
	return seal(b, start, gen, seq, durable)
}

// seal fills in the header of the record that starts at b[start:].
func seal(b []byte, start int, gen, seq, durable uint64) []byte {
	h := b[start : start+recHeaderLen]
	binary.BigEndian.PutUint64(h[0:], gen)
	binary.BigEndian.PutUint64(h[8:], seq)
	binary.BigEndian.PutUint64(h[16:], durable)
	binary.BigEndian.PutUint32(h[24:], uint32(len(b)-start-recHeaderLen))
	sum := crc32.Update(crc32.Checksum(h[:28], castagnoli), castagnoli, b[start+recHeaderLen:])
	binary.BigEndian.PutUint32(h[28:], sum)
	return b
}

// record is one decoded record.
type record struct {
	seq, durable uint64
	payload      []byte
	n            int // bytes taken in the log
}

// decodeRecord decodes the record at the start of b if it is whole and
// belongs to the log gen.
func decodeRecord(b []byte, gen uint64) (record, bool) {
	if len(b) < recHeaderLen || binary.BigEndian.Uint64(b) != gen {
		return record{}, false
	}
	l := binary.BigEndian.Uint32(b[24:])
	if l > maxRecordLen || uint64(len(b)-recHeaderLen) < uint64(l) {
		return record{}, false
	}
	n := recHeaderLen + int(l)
	sum := crc32.Update(crc32.Checksum(b[:28], castagnoli), castagnoli, b[recHeaderLen:n])
	if sum != binary.BigEndian.Uint32(b[28:]) {
		return record{}, false
	}
	return record{
		seq:     binary.BigEndian.Uint64(b[8:]),
		durable: binary.BigEndian.Uint64(b[16:]),
		payload: b[recHeaderLen:n],
		n:       n,
	}, true
}

// index is the state a log describes: the envelope of every committed
// message, as JSON.
type index struct {
	live    map[string][]byte
	records int // records in the log, live or not, for compaction
	// inline holds the live messages committed by an inline record whose
	// file is not known to be on disk yet: with their bytes when replayed
	// (slices of the log read), nil at run time. A compaction flushes
	// their files before it drops the records that carry them.
	inline map[string][]byte
}

func newIndex() index {
	return index{live: make(map[string][]byte), inline: make(map[string][]byte)}
}

// dead is the number of records in the log that a compaction would drop.
func (x *index) dead() int { return x.records - len(x.live) }

// apply replays one record's payload; the last record of an ID wins and a
// remove drops it, a note changes the envelope before it. An update or a
// note of an ID that is not live is ignored: its message was removed.
func (x *index) apply(payload []byte) error {
	op, rest, _ := bytes.Cut(payload, []byte(" "))
	id, js, _ := bytes.Cut(rest, []byte(" "))
	if !ValidID(string(id)) {
		return fmt.Errorf("record %.40q: invalid queue ID", payload)
	}
	x.records++
	switch string(op) {
	case opCommit:
		x.live[string(id)] = bytes.Clone(js)
		delete(x.inline, string(id))
	case opInline:
		js, msg, ok := bytes.Cut(js, []byte("\n"))
		if !ok {
			return fmt.Errorf("record %.40q: inline commit without the message", payload)
		}
		x.live[string(id)] = bytes.Clone(js)
		x.inline[string(id)] = msg
	case opUpdate:
		if _, ok := x.live[string(id)]; ok {
			x.live[string(id)] = bytes.Clone(js)
		}
	case opRemove:
		delete(x.live, string(id))
		delete(x.inline, string(id))
	case opNote:
		old, ok := x.live[string(id)]
		if !ok {
			break
		}
		js, err := applyNote(old, js)
		if err != nil {
			return fmt.Errorf("record %.40q: %w", payload, err)
		}
		x.live[string(id)] = js
	default:
		return fmt.Errorf("record %.40q: unknown operation", payload)
	}
	return nil
}

// scan applies the whole records at the start of b that continue the log
// gen at seq, and returns the bytes it consumed and the seq that follows.
// A record with a good CRC that does not parse is an error: it is not
// damage but a bug, and skipping it could lose a message.
func (x *index) scan(b []byte, gen, seq uint64) (int, uint64, error) {
	n := 0
	for {
		r, ok := decodeRecord(b[n:], gen)
		if !ok || r.seq != seq {
			return n, seq, nil
		}
		if err := x.apply(r.payload); err != nil {
			return n, seq, err
		}
		n += r.n
		seq++
	}
}

// damaged reports whether b (what follows the record seq, which is not
// whole) holds a whole record that says seq was durable: then seq was
// written and synced, and it is damage rather than a torn tail.
func damaged(b []byte, gen, seq uint64) bool {
	g := binary.BigEndian.AppendUint64(nil, gen)
	for i := 1; i < len(b); i++ {
		j := bytes.Index(b[i:], g)
		if j < 0 {
			return false
		}
		i += j
		if r, ok := decodeRecord(b[i:], gen); ok && r.durable > seq {
			return true
		}
	}
	return false
}

// readHeader reads the header of a log file and returns its gen.
func readHeader(r io.ReaderAt) (uint64, error) {
	h := make([]byte, logHeaderLen)
	if _, err := r.ReadAt(h, 0); err != nil {
		return 0, fmt.Errorf("read %s header: %w", logName, err)
	}
	if string(h[:len(logMagic)]) != logMagic {
		return 0, fmt.Errorf("%s is not an envelope log", logName)
	}
	return binary.BigEndian.Uint64(h[len(logMagic):]), nil
}

// replayFile reads the log at path for recovery. A missing log is an
// empty one. The error says so if the log is damaged: records that were
// durable cannot be read, and removing the message files they commit
// would lose mail, so Open fails for an operator to look.
func replayFile(path string) (index, error) {
	x := newIndex()
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return x, nil
	}
	if err != nil {
		return x, err
	}
	gen, err := readHeader(bytes.NewReader(b))
	if err != nil {
		return x, err
	}
	b = b[logHeaderLen:]
	n, seq, err := x.scan(b, gen, 1)
	if err != nil {
		return x, fmt.Errorf("%s at offset %d: %w", logName, logHeaderLen+n, err)
	}
	if n < len(b) && damaged(b[n:], gen, seq) {
		return x, fmt.Errorf("%s is damaged at offset %d (record %d), before records that were on disk; refusing to recover: restore it or cut it to that offset, losing what follows", logName, logHeaderLen+n, seq)
	}
	return x, nil
}
