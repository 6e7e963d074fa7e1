// Package trace keeps the history of every message so that "why was this
// rejected?" and "where did this go?" are answerable from a queue ID or a
// Message-ID alone, for rejected messages too.
//
// The SMTP side records the connection, each phase's stage results and the
// decision with its reply; the router records every delivery attempt and
// its outcome. Events are appended as JSON lines to one file per day:
//
//	<dir>/2006-01-02.jsonl
//
// A file is only ever appended to, one whole line per write(2) with
// O_APPEND, so a reader in another process (mailgate trace) reads it
// safely while the gateway writes; a line cut short by a crash is skipped.
// Files older than the retention period are deleted by Expire. Trace
// writes are not fsynced: a trace is for answering questions, the spool
// is what must survive a crash.
package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// Event is one thing that happened to a message.
type Event struct {
	Time      time.Time `json:"time"`
	QueueID   string    `json:"queue_id"`
	MessageID string    `json:"message_id,omitempty"`
	// Event is what happened: connect, rcpt, data (the SMTP side, data
	// carrying the decision), released, deleted (operator), attempt,
	// expired, dsn (the router), pickup (a stage's mail queued from
	// <data_dir>/pickup/).
	Event  string   `json:"event"`
	Client string   `json:"client,omitempty"`
	Helo   string   `json:"helo,omitempty"`
	TLS    string   `json:"tls,omitempty"`
	From   *string  `json:"from,omitempty"` // set on connect; "" is the null sender
	Rcpts  []string `json:"rcpts,omitempty"`
	Stages []Stage  `json:"stages,omitempty"`
	// The decision or outcome.
	Action string  `json:"action,omitempty"`
	Score  float64 `json:"score,omitempty"`
	Stage  string  `json:"stage,omitempty"`  // the stage that decided
	Policy string  `json:"policy,omitempty"` // the [policy] or override applied
	Reason string  `json:"reason,omitempty"`
	Reply  string  `json:"reply,omitempty"` // the reply given, or received from the next hop
	Host   string  `json:"host,omitempty"`
	Size   int64   `json:"size,omitempty"`
	// Related is another queue ID this event links to: the copy a
	// quarantine release queued, the original of that copy, a DSN.
	Related string `json:"related,omitempty"`
	// Node is the node of a cluster that recorded the event, as the
	// cluster's store (state.Traces) gives it when read; empty in a
	// node's own trace files, which are that node's.
	Node string `json:"node,omitempty"`
}

// Stage is what one stage did in one phase: the one record of it that the
// pipeline's decisions carry and the trace, the quarantine record and
// `mailgate test -json` all show. Kind and score are always written, so
// that a script reads every stage the same.
type Stage struct {
	Name       string        `json:"name"`
	Kind       string        `json:"kind"`
	Phase      string        `json:"phase"`
	Action     stages.Action `json:"action"` // after on_error or a result mapping
	Score      float64       `json:"score"`
	Result     string        `json:"result,omitempty"`
	Reason     string        `json:"reason,omitempty"`
	Error      string        `json:"error,omitempty"` // why the stage broke; "" if it did not
	DurationMS float64       `json:"duration_ms"`
}

const suffix = ".jsonl"
const dayLayout = "2006-01-02"

// Log appends events to the day's file. A nil *Log records nothing. Its
// methods are safe for concurrent use.
type Log struct {
	dir string
	log *slog.Logger

	mu  sync.Mutex
	day string
	f   *os.File
}

// Open makes dir if needed and returns a Log writing into it. Write errors
// are reported to logger: a trace that cannot be written never holds up
// mail.
func Open(dir string, logger *slog.Logger) (*Log, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("open trace: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Log{dir: dir, log: logger}, nil
}

// Record appends e, stamped with the current time if it has none.
func (l *Log) Record(e Event) {
	if l == nil {
		return
	}
	if e.Time.IsZero() {
		e.Time = time.Now()
	}
	e.Time = e.Time.UTC()
	b, err := json.Marshal(e)
	if err != nil {
		l.log.Error("trace", "queue_id", e.QueueID, "err", err)
		return
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	if err := l.rotate(e.Time); err == nil {
		_, err = l.f.Write(b)
	}
	if err != nil {
		l.log.Error("trace write", "queue_id", e.QueueID, "err", err)
	}
}

// rotate makes l.f the file of t's day.
func (l *Log) rotate(t time.Time) error {
	day := t.Format(dayLayout)
	if l.f != nil && l.day == day {
		return nil
	}
	if l.f != nil {
		l.f.Close()
		l.f = nil
	}
	f, err := os.OpenFile(filepath.Join(l.dir, day+suffix), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	l.f, l.day = f, day
	return nil
}

// Expire deletes the files of the days that ended more than retention
// before now.
func (l *Log) Expire(now time.Time, retention time.Duration) error {
	if l == nil || retention <= 0 {
		return nil
	}
	days, err := files(l.dir)
	if err != nil {
		return err
	}
	var errs []error
	for _, d := range days {
		if !d.day.AddDate(0, 0, 1).Before(now.Add(-retention)) {
			continue
		}
		l.mu.Lock()
		if l.day == d.name && l.f != nil {
			l.f.Close()
			l.f = nil
		}
		err := os.Remove(filepath.Join(l.dir, d.name+suffix))
		l.mu.Unlock()
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("expire traces: %w", err)
	}
	return nil
}

// Close closes the current file.
func (l *Log) Close() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}

type dayFile struct {
	name string
	day  time.Time
}

// files lists the trace files in dir, oldest first.
func files(dir string) ([]dayFile, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("read traces: %w", err)
	}
	var out []dayFile
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), suffix)
		if !ok {
			continue
		}
		day, err := time.Parse(dayLayout, name)
		if err != nil {
			continue
		}
		out = append(out, dayFile{name: name, day: day})
	}
	slices.SortFunc(out, func(a, b dayFile) int { return a.day.Compare(b.day) })
	return out, nil
}

// Find returns the events of the message with queue ID or Message-ID id
// (with or without its angle brackets), oldest first, across every file
// in dir. Messages linked by Related (a quarantined message and the copy
// its release queued, a DSN) are included, so the whole story is told. It
// only reads: it is safe next to a running gateway.
func Find(dir, id string) ([]Event, error) {
	var all []Event
	if err := Scan(dir, time.Time{}, time.Time{}, func(e Event) { all = append(all, e) }); err != nil {
		return nil, err
	}
	mid := strings.Trim(id, "<>")
	want := map[string]bool{}
	for _, e := range all {
		if e.QueueID == id || (mid != "" && strings.Trim(e.MessageID, "<>") == mid) {
			want[e.QueueID] = true
		}
	}
	// Follow links until nothing new is added; each round adds at least
	// one ID, so this ends.
	for grew := true; grew; {
		grew = false
		for _, e := range all {
			if e.Related == "" {
				continue
			}
			if want[e.QueueID] && !want[e.Related] {
				want[e.Related], grew = true, true
			}
		}
	}
	var out []Event
	for _, e := range all {
		if want[e.QueueID] {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return out, nil
}

// Merge returns the events of a and b, oldest first, each once: an event
// of both (a node's own, read from its files and from the store its
// cluster shares, which keeps times to the microsecond) counts once.
func Merge(a, b []Event) []Event {
	seen := map[string]bool{}
	var out []Event
	for _, e := range append(slices.Clone(a), b...) {
		k := e
		k.Time = k.Time.UTC().Truncate(time.Microsecond)
		key, _ := json.Marshal(k)
		if !seen[string(key)] {
			seen[string(key)] = true
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Event) int { return a.Time.Compare(b.Time) })
	return out
}

// Scan calls fn with every event in dir of the days from since to until
// (zero: no bound), file by file, oldest day first, in the order written,
// skipping lines that do not parse (a line cut short by a crash). Only the
// files of those days are read.
func Scan(dir string, since, until time.Time, fn func(Event)) error {
	days, err := files(dir)
	if err != nil {
		return err
	}
	for _, d := range days {
		if !since.IsZero() && d.day.AddDate(0, 0, 1).Before(since.UTC()) || !until.IsZero() && d.day.After(until.UTC()) {
			continue
		}
		f, err := os.Open(filepath.Join(dir, d.name+suffix))
		if errors.Is(err, fs.ErrNotExist) {
			continue // expired meanwhile
		}
		if err != nil {
			return fmt.Errorf("read traces: %w", err)
		}
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 64*1024), 16<<20)
		for sc.Scan() {
			line := sc.Bytes()
			if !bytes.HasSuffix(line, []byte("}")) {
				continue
			}
			var e Event
			if json.Unmarshal(line, &e) == nil {
				fn(e)
			}
		}
		err = sc.Err()
		f.Close()
		if err != nil {
			return fmt.Errorf("read traces %s: %w", d.name, err)
		}
	}
	return nil
}

// Print writes events as an operator reads them: one line per event, the
// stage results indented below it.
func Print(w io.Writer, events []Event) error {
	bw := bufio.NewWriter(w)
	for _, e := range events {
		fmt.Fprintf(bw, "%s  %s  %-9s", e.Time.Format("2006-01-02 15:04:05.000"), e.QueueID, e.Event)
		field := func(k, v string) {
			if v != "" {
				fmt.Fprintf(bw, " %s=%s", k, quote(v))
			}
		}
		field("client", e.Client)
		field("helo", e.Helo)
		field("tls", e.TLS)
		if e.From != nil {
			fmt.Fprintf(bw, " from=<%s>", *e.From)
		}
		for _, r := range e.Rcpts {
			fmt.Fprintf(bw, " to=<%s>", r)
		}
		field("message_id", e.MessageID)
		if e.Size > 0 {
			fmt.Fprintf(bw, " size=%d", e.Size)
		}
		field("action", e.Action)
		if e.Score != 0 {
			fmt.Fprintf(bw, " score=%g", e.Score)
		}
		field("stage", e.Stage)
		field("policy", e.Policy)
		field("reason", e.Reason)
		field("host", e.Host)
		field("reply", e.Reply)
		field("related", e.Related)
		bw.WriteString("\n")
		for _, s := range e.Stages {
			fmt.Fprintf(bw, "      stage %s (%s) %s: %s", s.Name, s.Kind, s.Phase, s.Action)
			if s.Score != 0 {
				fmt.Fprintf(bw, " score=%g", s.Score)
			}
			fmt.Fprintf(bw, " %.1fms", s.DurationMS)
			field("result", s.Result)
			field("reason", s.Reason)
			field("error", s.Error)
			bw.WriteString("\n")
		}
	}
	return bw.Flush()
}

// quote quotes v when it has spaces or quotes, as logfmt does.
func quote(v string) string {
	if strings.ContainsAny(v, " \"=\t") {
		return strconv.Quote(v)
	}
	return v
}
