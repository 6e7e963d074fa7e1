package ratelimit

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages/durable"
)

// The state file holds the live keys of a Table:
//
//	"mailgate ratelimit state 1\n"
//	per key: the key (16 bytes), its TAT (Unix nanoseconds, 8 bytes little-endian)
//	CRC-32C of all that (4 bytes little-endian)
//
// It is written whole under a temporary name, synced and renamed, so a
// crash leaves the old file or the new one. A file that does not read
// back exactly (another format, torn, garbage) is not ours to trust: the
// limits start empty, with a log line, and the next save replaces it.
// Starting empty fails open: every key has its burst whole.
const (
	stateFile  = "state"
	formatLine = "mailgate ratelimit state 1\n"
	recordSize = 16 + 8
)

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// errCorrupt marks a state file that does not read back.
var errCorrupt = errors.New("corrupt")

// encode writes the keys of t whose TAT is after now, and drops the
// others from t.
func (t *Table) encode(now int64) []byte {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.prune(now)
	t.changed = false
	b := make([]byte, 0, len(formatLine)+len(t.tats)*recordSize+4)
	b = append(b, formatLine...)
	for k, tat := range t.tats {
		b = append(b, k[:]...)
		b = binary.LittleEndian.AppendUint64(b, uint64(tat))
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, crcTable))
}

// decode reads a state file into t: all of it, or nothing.
func (t *Table) decode(b []byte, now int64) error {
	body, ok := bytes.CutPrefix(b, []byte(formatLine))
	if !ok || len(body) < 4 || (len(body)-4)%recordSize != 0 ||
		binary.LittleEndian.Uint32(b[len(b)-4:]) != crc32.Checksum(b[:len(b)-4], crcTable) {
		return fmt.Errorf("%w: expect %q, whole records and a checksum", errCorrupt, formatLine)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	for r := body[:len(body)-4]; len(r) > 0; r = r[recordSize:] {
		if len(t.tats) >= t.max {
			break // MaxKeys was lowered; the rest start over
		}
		var k Key
		copy(k[:], r)
		if tat := int64(binary.LittleEndian.Uint64(r[16:])); tat > now {
			t.tats[k] = tat
		}
	}
	return nil
}

// ReadTable returns a Table with the state saved in dir, for a dry run
// that must see the limits as the gateway saved them and must not write
// them. A state that cannot be read gives an empty table and the error.
func ReadTable(dir string, now time.Time) (*Table, error) {
	t := NewTable(0)
	b, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return t, err
	}
	return t, t.decode(b, now.UnixNano())
}

// FileOptions are the options of a File.
type FileOptions struct {
	MaxKeys int              // 0: MaxKeys
	Now     func() time.Time // the limits' clock; nil: time.Now
	Logger  *slog.Logger
	Metrics *Metrics
	// SaveEvery is how often the state is saved when it changed; 0:
	// SaveEvery. A crash loses what changed since the last save: some
	// keys get more of their burst again.
	SaveEvery time.Duration
}

// SaveEvery is how often a File saves by default.
const SaveEvery = 10 * time.Second

// File is the embedded Store: a Table, read from dir at start and saved
// there every SaveEvery and at Close.
type File struct {
	*Table
	path string
	opts FileOptions

	saving  sync.Mutex
	failing bool // under saving: the last save failed, and was logged

	stop  chan struct{}
	done  chan struct{}
	close sync.Once
}

// OpenFile reads the state saved in dir and starts saving it. It does not
// fail: a state it cannot read is started over, a directory it cannot
// write leaves the limits in memory only, both logged and counted.
func OpenFile(dir string, o FileOptions) *File {
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.SaveEvery <= 0 {
		o.SaveEvery = SaveEvery
	}
	f := &File{Table: NewTable(o.MaxKeys), path: filepath.Join(dir, stateFile), opts: o,
		stop: make(chan struct{}), done: make(chan struct{})}
	f.evicted = func(n int) {
		o.Metrics.fault("evicted", n)
		o.Logger.Warn("rate limits: state full; keys dropped before their time get their burst whole again", "keys", n, "max_keys", f.max)
	}
	b, err := os.ReadFile(f.path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err == nil:
		err = f.decode(b, o.Now().UnixNano())
	}
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		o.Metrics.fault("corrupt", 1)
		o.Logger.Error("rate limits: saved state unreadable; starting with every limit's burst whole, and rebuilding the file",
			"file", f.path, "err", err)
		f.changed = true // rewrite it at the first save
	}
	go f.run()
	return f
}

func (f *File) run() {
	defer close(f.done)
	tick := time.NewTicker(f.opts.SaveEvery)
	defer tick.Stop()
	for {
		select {
		case <-f.stop:
			return
		case <-tick.C:
			f.Save()
		}
	}
}

// Save writes the state if it changed since the last save. A failure is
// logged once until a save works again, counted each time, and leaves the
// limits holding in memory.
func (f *File) Save() error {
	f.saving.Lock()
	defer f.saving.Unlock()
	f.mu.Lock()
	changed := f.changed
	f.mu.Unlock()
	if !changed {
		return nil
	}
	err := writeFile(f.path, f.encode(f.opts.Now().UnixNano()))
	switch {
	case err != nil:
		f.mu.Lock()
		f.changed = true
		f.mu.Unlock()
		f.opts.Metrics.fault("save", 1)
		if !f.failing {
			f.opts.Logger.Error("rate limits: state not saved; the limits hold in memory, and start over after a restart", "file", f.path, "err", err)
		}
		f.failing = true
	case f.failing:
		f.failing = false
		f.opts.Logger.Info("rate limits: state saved again", "file", f.path)
	}
	return err
}

// Close stops saving and saves one last time; a second Close only saves.
func (f *File) Close() error {
	f.close.Do(func() {
		close(f.stop)
		<-f.done
	})
	return f.Save()
}

// writeFile replaces path with b, durably; its directory is made first.
func writeFile(path string, b []byte) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return durable.WriteFile(path, b, "")
}
