package ratelimit

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// logBuffer collects log output a test reads while it is written.
type logBuffer = testkit.SyncBuffer

func logger(l *logBuffer) *slog.Logger { return slog.New(slog.NewTextHandler(l, nil)) }

// spend takes events for key until one is refused and returns how many
// passed.
func spend(t *testing.T, s Store, k Key, lim Limit, now time.Time) int {
	t.Helper()
	for n := 0; ; n++ {
		ok, err := s.Take(context.Background(), k, lim, now)
		if err != nil {
			t.Fatal(err)
		}
		if !ok {
			return n
		}
		if n > lim.Burst {
			t.Fatalf("more than the burst passed")
		}
	}
}

func fileOpts(c *fakeClock, log *logBuffer, m *Metrics) FileOptions {
	// SaveEvery an hour: the tests save when they choose.
	return FileOptions{Now: c.Now, Logger: logger(log), Metrics: m, SaveEvery: time.Hour}
}

// TestFileSurvivesRestart: a spent burst is still spent after Close and
// OpenFile; a key whose TAT passed is not written.
func TestFileSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	c, log := newClock(), &logBuffer{}
	lim := Limit{Interval: time.Minute, Burst: 3}
	f := OpenFile(dir, fileOpts(c, log, nil))
	if n := spend(t, f, KeyOf("r", "a"), lim, c.Now()); n != 3 {
		t.Fatalf("%d passed, want 3", n)
	}
	spend(t, f, KeyOf("r", "old"), Limit{Interval: time.Second, Burst: 1}, c.Now().Add(-time.Hour))
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	if want := len(formatLine) + recordSize + 4; len(b) != want {
		t.Errorf("state file of %d bytes, want %d: one live key", len(b), want)
	}

	c.Add(time.Minute) // one event's worth refilled
	f = OpenFile(dir, fileOpts(c, log, nil))
	defer f.Close()
	if n := spend(t, f, KeyOf("r", "a"), lim, c.Now()); n != 1 {
		t.Fatalf("%d passed after the restart, want 1", n)
	}
	if f.Len() != 1 {
		t.Errorf("%d keys after the restart, want 1", f.Len())
	}
	if log.String() != "" {
		t.Errorf("logged %q", log)
	}
}

// TestFileCorruptAtStart: a state file that does not read back is
// rebuilt: the limits start empty, one error line says so, the fault is
// counted, and the next save writes a good file. Never a crash.
func TestFileCorruptAtStart(t *testing.T) {
	good := func() []byte {
		t := NewTable(0)
		t.Take(context.Background(), KeyOf("r", "a"), Limit{time.Hour, 1}, newClock().Now())
		return t.encode(newClock().nanos())
	}()
	for name, data := range map[string][]byte{
		"garbage":       []byte("\x00\xff not a state file at all"),
		"empty":         {},
		"another kind":  []byte("mailgate greylist store 1\n"),
		"newer version": append([]byte("mailgate ratelimit state 2\n"), good[len(formatLine):]...),
		"torn":          good[:len(good)-5],
		"bit flipped": func() []byte {
			b := bytes.Clone(good)
			b[len(formatLine)+3] ^= 1
			return b
		}(),
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "state")
			os.WriteFile(path, data, 0o600)
			c, log := newClock(), &logBuffer{}
			m := NewMetrics(prometheus.NewRegistry())
			f := OpenFile(dir, fileOpts(c, log, m))
			defer f.Close()
			if f.Len() != 0 {
				t.Errorf("%d keys from a corrupt file", f.Len())
			}
			if !strings.Contains(log.String(), "level=ERROR") || !strings.Contains(log.String(), "saved state unreadable") ||
				!strings.Contains(log.String(), path) {
				t.Errorf("log: %q", log)
			}
			if n := testutil.ToFloat64(m.faults.WithLabelValues("corrupt")); n != 1 {
				t.Errorf("corrupt faults %v, want 1", n)
			}
			if err := f.Save(); err != nil {
				t.Fatal(err)
			}
			if _, err := ReadTable(dir, c.Now()); err != nil {
				t.Errorf("the file is not rebuilt: %v", err)
			}
		})
	}
	t.Run("good", func(t *testing.T) {
		dir := t.TempDir()
		os.WriteFile(filepath.Join(dir, "state"), good, 0o600)
		tab, err := ReadTable(dir, newClock().Now())
		if err != nil || tab.Len() != 1 {
			t.Fatalf("%d keys, %v", tab.Len(), err)
		}
	})
}

// TestFileUnwritable: a state that cannot be saved (here the directory
// is a file, which holds as root too; a full disk fails the same way)
// leaves the limits holding in memory; the failure is logged once while
// it lasts, counted each time, and a save that works again says so.
func TestFileUnwritable(t *testing.T) {
	parent := t.TempDir()
	dir := filepath.Join(parent, "ratelimit")
	if err := os.WriteFile(dir, []byte("in the way"), 0o600); err != nil {
		t.Fatal(err)
	}
	c, log := newClock(), &logBuffer{}
	m := NewMetrics(prometheus.NewRegistry())
	f := OpenFile(dir, fileOpts(c, log, m))
	lim := Limit{Interval: time.Hour, Burst: 2}
	for i := range 3 {
		if n := spend(t, f, KeyOf("r", string(rune('a'+i))), lim, c.Now()); n != 2 {
			t.Fatalf("%d passed with the state unwritable, want 2", n)
		}
		if err := f.Save(); err == nil {
			t.Fatal("saved into a file")
		}
	}
	if got := strings.Count(log.String(), "state not saved"); got != 1 {
		t.Errorf("logged %d times, want once:\n%s", got, log)
	}
	if n := testutil.ToFloat64(m.faults.WithLabelValues("save")); n != 3 {
		t.Errorf("save faults %v, want 3", n)
	}
	os.Remove(dir)
	if err := f.Close(); err != nil {
		t.Fatalf("save once the way is clear: %v", err)
	}
	if !strings.Contains(log.String(), "state saved again") {
		t.Errorf("log: %q", log)
	}
	if tab, err := ReadTable(dir, c.Now()); err != nil || tab.Len() != 3 {
		t.Errorf("%d keys saved, %v; want 3", tab.Len(), err)
	}
}

// TestFileSavesOnItsOwn: without Save or Close, the state reaches the
// disk within SaveEvery.
func TestFileSavesOnItsOwn(t *testing.T) {
	dir := t.TempDir()
	c, log := newClock(), &logBuffer{}
	o := fileOpts(c, log, nil)
	o.SaveEvery = 10 * time.Millisecond
	f := OpenFile(dir, o)
	defer f.Close()
	spend(t, f, KeyOf("r", "a"), Limit{time.Hour, 1}, c.Now())
	deadline := time.Now().Add(30 * time.Second) // a bound for a loaded machine
	for {
		if tab, err := ReadTable(dir, c.Now()); err == nil && tab.Len() == 1 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal("state not saved")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTableFull: a full table drops keys whose TAT has passed first; if
// none has, random keys (fail open for them), counted.
func TestTableFull(t *testing.T) {
	c := newClock()
	tab := NewTable(16)
	var evicted int
	tab.evicted = func(n int) { evicted += n }
	lim := Limit{Interval: time.Hour, Burst: 1}
	for i := range 16 {
		tab.Take(context.Background(), KeyOf("r", string(rune('a'+i))), lim, c.Now())
	}
	c.Add(2 * time.Hour) // every TAT has passed
	tab.Take(context.Background(), KeyOf("r", "new"), lim, c.Now())
	if tab.Len() != 1 || evicted != 0 {
		t.Fatalf("%d keys, %d evicted; want 1, 0", tab.Len(), evicted)
	}
	for i := range 20 {
		tab.Take(context.Background(), KeyOf("r", string(rune('A'+i))), lim, c.Now())
		if tab.Len() > 16 {
			t.Fatalf("%d keys, more than 16", tab.Len())
		}
	}
	if evicted == 0 {
		t.Fatal("nothing evicted from a full table of live keys")
	}
}
