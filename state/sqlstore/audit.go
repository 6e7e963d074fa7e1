package sqlstore

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/state"
)

type audit Store

// Record implements state.Audit.
func (a *audit) Record(ctx context.Context, e state.AuditEntry) (err error) {
	if e.Time.IsZero() {
		e.Time = now()
	}
	if e.Node == "" {
		e.Node = a.node
	}
	ctx, end := (*Store)(a).op(ctx)
	defer end(&err)
	_, err = a.db.exec(ctx, "INSERT INTO audit_log (time, node, actor, action, target, detail) VALUES ($1, $2, $3, $4, $5, $6)",
		micros(e.Time), e.Node, e.Actor, e.Action, e.Target, e.Detail)
	if err != nil {
		return fmt.Errorf("audit %s %s: %w", e.Action, e.Target, err)
	}
	return nil
}

// Entries implements state.Audit.
func (a *audit) Entries(ctx context.Context, f state.AuditFilter) (_ []state.AuditEntry, err error) {
	var w where
	if !f.Since.IsZero() {
		w.add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		w.add("time < ?", micros(f.Until))
	}
	for _, c := range []struct{ col, v string }{{"actor", f.Actor}, {"action", f.Action}, {"target", f.Target}} {
		if c.v != "" {
			w.add(c.col+" = ?", c.v)
		}
	}
	ctx, end := (*Store)(a).op(ctx)
	defer end(&err)
	rs, err := a.db.query(ctx, fmt.Sprintf("SELECT time, node, actor, action, target, detail FROM audit_log%s ORDER BY time DESC, seq DESC LIMIT %d", &w, limit(f.Limit)), w.args...)
	if err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	defer rs.Close()
	var out []state.AuditEntry
	for rs.Next() {
		var e state.AuditEntry
		var at int64
		if err := rs.Scan(&at, &e.Node, &e.Actor, &e.Action, &e.Target, &e.Detail); err != nil {
			return nil, fmt.Errorf("audit log: %w", err)
		}
		e.Time = fromMicros(at)
		out = append(out, e)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("audit log: %w", err)
	}
	return out, nil
}
