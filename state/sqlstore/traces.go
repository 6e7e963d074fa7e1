package sqlstore

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

type traces Store

// Append implements state.Traces.
func (t *traces) Append(ctx context.Context, events ...trace.Event) (err error) {
	if len(events) == 0 {
		return nil
	}
	ctx, end := (*Store)(t).op(ctx)
	defer end(&err)
	err = t.db.inTx(ctx, func(tx querier) error {
		for _, e := range events {
			if e.Time.IsZero() {
				e.Time = now()
			}
			e.Time = e.Time.UTC().Truncate(time.Microsecond)
			e.Node = "" // the column holds it: this store's node
			b, err := json.Marshal(e)
			if err != nil {
				return err
			}
			var sender string
			if e.From != nil {
				sender = strings.ToLower(*e.From)
			}
			// An event stored before, the same in every field, is not
			// stored again (found through the queue_id index).
			_, err = tx.exec(ctx, `INSERT INTO trace_events (time, node, queue_id, message_key, event, action, sender_key, rcpts_key, related, data)
				SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10
				WHERE NOT EXISTS (SELECT 1 FROM trace_events WHERE queue_id = $3 AND time = $1 AND data = $10)`,
				micros(e.Time), t.node, e.QueueID, strings.Trim(e.MessageID, "<>"), e.Event, e.Action, sender, lines(e.Rcpts), e.Related, string(b))
			if err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("trace: %w", err)
	}
	return nil
}

// maxRelated bounds how far Find follows Related links: a release of a
// release of a message, a DSN of that, … A chain longer than this is not
// a real message's story.
const maxRelated = 16

// Find implements state.Traces.
func (t *traces) Find(ctx context.Context, id string) (_ []trace.Event, err error) {
	ctx, end := (*Store)(t).op(ctx)
	defer end(&err)
	ids, err := t.strings(ctx, "SELECT DISTINCT queue_id FROM trace_events WHERE queue_id = $1 OR (message_key <> '' AND message_key = $2)", id, strings.Trim(id, "<>"))
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", id, err)
	}
	want := map[string]bool{}
	for _, q := range ids {
		want[q] = true
	}
	for fresh, round := ids, 0; len(fresh) > 0 && round < maxRelated; round++ {
		in, args := inList(fresh)
		linked, err := t.strings(ctx, "SELECT DISTINCT related FROM trace_events WHERE related <> '' AND queue_id IN "+in, args...)
		if err != nil {
			return nil, fmt.Errorf("trace %s: %w", id, err)
		}
		fresh = nil
		for _, q := range linked {
			if !want[q] {
				want[q] = true
				fresh = append(fresh, q)
			}
		}
	}
	if len(want) == 0 {
		return nil, nil
	}
	all := make([]string, 0, len(want))
	for q := range want {
		all = append(all, q)
	}
	in, args := inList(all)
	events, err := t.events(ctx, "SELECT node, data FROM trace_events WHERE queue_id IN "+in+" ORDER BY time, seq", args...)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", id, err)
	}
	return events, nil
}

// Search implements state.Traces.
func (t *traces) Search(ctx context.Context, f state.TraceFilter) (_ []trace.Event, err error) {
	var w where
	if !f.Since.IsZero() {
		w.add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		w.add("time < ?", micros(f.Until))
	}
	if f.From != "" {
		w.contains("sender_key", f.From, false)
	}
	if f.Rcpt != "" {
		w.contains("rcpts_key", f.Rcpt, false)
	}
	if f.Event != "" {
		w.add("event = ?", f.Event)
	}
	if f.Action != "" {
		w.add("action = ?", f.Action)
	}
	if f.Node != "" {
		w.add("node = ?", f.Node)
	}
	ctx, end := (*Store)(t).op(ctx)
	defer end(&err)
	events, err := t.events(ctx, fmt.Sprintf("SELECT node, data FROM trace_events%s ORDER BY time DESC, seq DESC LIMIT %d", &w, limit(f.Limit)), w.args...)
	if err != nil {
		return nil, fmt.Errorf("trace search: %w", err)
	}
	return events, nil
}

// Expire implements state.Traces.
func (t *traces) Expire(ctx context.Context, before time.Time) (_ int64, err error) {
	ctx, end := (*Store)(t).op(ctx)
	defer end(&err)
	n, err := t.db.exec(ctx, "DELETE FROM trace_events WHERE time < $1", micros(before))
	if err != nil {
		return 0, fmt.Errorf("expire traces: %w", err)
	}
	return n, nil
}

// inList is "($1, $2, …)" for items, and items as arguments.
func inList(items []string) (string, []any) {
	ph := make([]string, len(items))
	args := make([]any, len(items))
	for i, it := range items {
		ph[i], args[i] = fmt.Sprintf("$%d", i+1), it
	}
	return "(" + strings.Join(ph, ", ") + ")", args
}

// strings returns the one text column sql selects.
func (t *traces) strings(ctx context.Context, sql string, args ...any) ([]string, error) {
	rs, err := t.db.query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []string
	for rs.Next() {
		var s string
		if err := rs.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rs.Err()
}

// events decodes the events whose node and data sql selects.
func (t *traces) events(ctx context.Context, sql string, args ...any) ([]trace.Event, error) {
	rs, err := t.db.query(ctx, sql, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	var out []trace.Event
	for rs.Next() {
		var node, data string
		if err := rs.Scan(&node, &data); err != nil {
			return nil, err
		}
		var e trace.Event
		if err := json.Unmarshal([]byte(data), &e); err != nil {
			return nil, fmt.Errorf("event: %w", err)
		}
		e.Node = node
		out = append(out, e)
	}
	return out, rs.Err()
}
