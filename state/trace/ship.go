package trace

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"time"
)

// Appender takes events for the traces the nodes of a cluster share
// (state.Traces, in PostgreSQL). An event appended twice is stored once.
type Appender interface {
	Append(ctx context.Context, events ...Event) error
}

// ShipEvery is how often Ship looks for events to send.
const ShipEvery = time.Second

// shipBatch bounds the events of one Append.
const shipBatch = 500

// shippedFile, in the trace directory, holds how far Ship has sent each
// day file: {"2006-01-02": byte offset, …}. Events land in the file of
// their own day, so more than one file may grow (a session that began
// before midnight records its connect event into yesterday's).
const shippedFile = ".shipped"

// Ship sends the events written to dir to dst, in the order each file
// has them, until ctx ends. dst returns nil while there is nowhere to
// send (PostgreSQL not reached yet). The day files are the buffer: while
// dst fails, events wait in them and go when it works again, from where
// the .shipped file says, also after a restart; the files stay, and are
// expired as on one node. A batch is noted as sent after Append took it,
// so a crash in between sends it again, which the store does not double.
// The first Ship in dir starts at the end of what the files hold: what
// was written before the node joined a cluster is mailgate cluster
// import's to copy.
func Ship(ctx context.Context, dir string, dst func() Appender, log *slog.Logger) {
	s := &shipper{dir: dir, log: log}
	if err := s.load(); err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			log.Warn("trace shipping: cursor unreadable; starting at the end of the trace files", "err", err)
		}
		s.sent = map[string]int64{}
		if days, err := files(dir); err == nil {
			for _, d := range days {
				if st, err := os.Stat(s.path(d.name)); err == nil {
					s.sent[d.name] = st.Size()
				}
			}
		}
		s.save()
	}
	t := time.NewTicker(ShipEvery)
	defer t.Stop()
	for {
		if a := dst(); a != nil {
			s.send(ctx, a)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

type shipper struct {
	dir     string
	log     *slog.Logger
	sent    map[string]int64 // day → bytes of its file sent
	failing bool             // the last Append failed, and was logged
}

func (s *shipper) path(day string) string { return filepath.Join(s.dir, day+suffix) }

func (s *shipper) load() error {
	b, err := os.ReadFile(filepath.Join(s.dir, shippedFile))
	if err != nil {
		return err
	}
	return json.Unmarshal(b, &s.sent)
}

// save writes the cursor under a temporary name and renames it: a crash
// leaves the old one, which sends a batch again at worst.
func (s *shipper) save() {
	b, _ := json.Marshal(s.sent)
	tmp := filepath.Join(s.dir, shippedFile+".tmp")
	err := os.WriteFile(tmp, b, 0o600)
	if err == nil {
		err = os.Rename(tmp, filepath.Join(s.dir, shippedFile))
	}
	if err != nil {
		s.log.Error("trace shipping: cursor not saved; a batch may be sent again", "err", err)
	}
}

// send sends what the files hold beyond the cursor, a batch at a time,
// until it is all sent or an Append fails.
func (s *shipper) send(ctx context.Context, dst Appender) {
	days, err := files(s.dir)
	if err != nil {
		s.log.Error("trace shipping", "err", err)
		return
	}
	present := map[string]bool{}
	for _, d := range days {
		present[d.name] = true
		for {
			batch, next, err := s.read(d.name)
			if err != nil {
				s.log.Error("trace shipping", "err", err)
				break
			}
			if next == s.sent[d.name] {
				break // nothing new
			}
			if err := dst.Append(ctx, batch...); err != nil {
				if !s.failing && ctx.Err() == nil {
					s.log.Warn("trace shipping: the cluster's store failed; events wait in the trace files", "err", err)
				}
				s.failing = true
				return
			}
			if s.failing {
				s.log.Info("trace shipping: sending again")
				s.failing = false
			}
			s.sent[d.name] = next
			s.save()
		}
	}
	for day := range s.sent {
		if !present[day] {
			delete(s.sent, day) // expired
		}
	}
}

// read returns the events of up to shipBatch whole lines of day's file
// after the cursor, and the offset after them. A line that does not
// parse (one a crash cut short, with what was written after it) is
// skipped; a last line not yet ended is left for the next round.
func (s *shipper) read(day string) ([]Event, int64, error) {
	off := s.sent[day]
	f, err := os.Open(s.path(day))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, off, nil // expired meanwhile
	}
	if err != nil {
		return nil, off, err
	}
	defer f.Close()
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return nil, off, err
	}
	r := bufio.NewReader(f)
	var out []Event
	for len(out) < shipBatch {
		line, err := r.ReadBytes('\n')
		if err == io.EOF {
			break // an unended line, or none: later
		}
		if err != nil {
			return nil, off, fmt.Errorf("read %s: %w", f.Name(), err)
		}
		off += int64(len(line))
		var e Event
		if json.Unmarshal(bytes.TrimSpace(line), &e) == nil {
			out = append(out, e)
		}
	}
	return out, off, nil
}

// Copy sends every event of dir's files to dst, a batch at a time, and
// returns how many it sent: mailgate cluster import. dst stores an event
// once, so Copy may run again.
func Copy(ctx context.Context, dir string, dst Appender) (int, error) {
	days, err := files(dir)
	if err != nil {
		return 0, err
	}
	s := &shipper{dir: dir, sent: map[string]int64{}}
	n := 0
	for _, d := range days {
		for {
			batch, next, err := s.read(d.name)
			if err != nil || next == s.sent[d.name] {
				if err != nil {
					return n, err
				}
				break
			}
			if err := dst.Append(ctx, batch...); err != nil {
				return n, err
			}
			n += len(batch)
			s.sent[d.name] = next
		}
	}
	return n, nil
}
