package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"
	"syscall"

	"github.com/mailgate/mailgate/policy"
)

func newLogger(cfg *policy.Config, w io.Writer) *slog.Logger {
	return newLeveledLogger(cfg, w, new(slog.LevelVar), false)
}

// newLeveledLogger logs at the level of level, set here from the config
// and later by reloads. [log] format = "json" writes JSON lines, as
// asked, journal or not. Text lines going to the systemd journal leave
// out the time, which the journal stamps on every line itself, and start
// with the line's syslog priority, <3> to <7>, which journald takes as the
// entry's priority (SyslogLevelPrefix=, on by default): journalctl -p
// warning shows warnings and errors.
func newLeveledLogger(cfg *policy.Config, w io.Writer, level *slog.LevelVar, journal bool) *slog.Logger {
	level.UnmarshalText([]byte(cfg.Log.Level)) // validated by policy; "" is info
	opts := &slog.HandlerOptions{Level: level, ReplaceAttr: durationText}
	switch {
	case cfg.Log.Format == "json":
		return slog.New(slog.NewJSONHandler(w, opts))
	case journal:
		opts.ReplaceAttr = func(groups []string, a slog.Attr) slog.Attr {
			if len(groups) == 0 && a.Key == slog.TimeKey {
				return slog.Attr{}
			}
			return durationText(groups, a)
		}
		out := &journalOut{w: w}
		return slog.New(journalHandler{slog.NewTextHandler(&out.line, opts), out})
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// durationText writes a duration as the text handler does ("1.5ms",
// "2m30s") in JSON logs too, where slog would write integer nanoseconds:
// one unit in both formats, which a reader sees with it.
func durationText(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// underJournal reports whether f is the stream systemd connected to the
// journal: JOURNAL_STREAM holds its device and inode (systemd.exec(5)),
// and a stderr redirected elsewhere since (mailgate serve 2>file in a
// unit's shell) does not match.
func underJournal(journalStream string, f *os.File) bool {
	var dev, ino uint64
	if _, err := fmt.Sscanf(journalStream, "%d:%d", &dev, &ino); err != nil {
		return false
	}
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && uint64(st.Dev) == dev && st.Ino == ino
}

// journalHandler puts the syslog priority before each line its text
// handler writes. The handlers made by WithAttrs and WithGroup share out,
// so that lines stay whole.
type journalHandler struct {
	slog.Handler // writes into out.line
	out          *journalOut
}

type journalOut struct {
	mu   sync.Mutex
	line bytes.Buffer
	w    io.Writer
}

func (h journalHandler) Handle(ctx context.Context, r slog.Record) error {
	h.out.mu.Lock()
	defer h.out.mu.Unlock()
	h.out.line.Reset()
	// RFC 5424 §6.2.1 severities, as sd-daemon.h's SD_ERR ... SD_DEBUG.
	prio := 6
	switch {
	case r.Level >= slog.LevelError:
		prio = 3
	case r.Level >= slog.LevelWarn:
		prio = 4
	case r.Level < slog.LevelInfo:
		prio = 7
	}
	fmt.Fprintf(&h.out.line, "<%d>", prio)
	if err := h.Handler.Handle(ctx, r); err != nil {
		return err
	}
	_, err := h.out.w.Write(h.out.line.Bytes())
	return err
}

func (h journalHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return journalHandler{h.Handler.WithAttrs(as), h.out}
}

func (h journalHandler) WithGroup(name string) slog.Handler {
	return journalHandler{h.Handler.WithGroup(name), h.out}
}
