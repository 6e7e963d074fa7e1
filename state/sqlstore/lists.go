package sqlstore

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

type lists Store

// Add implements state.Lists.
func (l *lists) Add(ctx context.Context, e state.ListEntry) (err error) {
	e, err = state.CanonicalEntry(e)
	if err != nil {
		return err
	}
	if e.Added.IsZero() {
		e.Added = now()
	}
	ctx, end := (*Store)(l).op(ctx)
	defer end(&err)
	_, err = l.db.exec(ctx, `INSERT INTO list_entries (owner, kind, sender, added, added_by) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (owner, kind, sender) DO UPDATE SET added = excluded.added, added_by = excluded.added_by`,
		e.Owner, string(e.Kind), e.Sender, micros(e.Added), e.By)
	if err != nil {
		return fmt.Errorf("list %s: add %s %s: %w", e.Owner, e.Kind, e.Sender, err)
	}
	return nil
}

// Remove implements state.Lists.
func (l *lists) Remove(ctx context.Context, owner string, kind state.ListKind, sender string) (err error) {
	e, err := state.CanonicalEntry(state.ListEntry{Owner: owner, Kind: kind, Sender: sender})
	if err != nil {
		return err
	}
	ctx, end := (*Store)(l).op(ctx)
	defer end(&err)
	n, err := l.db.exec(ctx, "DELETE FROM list_entries WHERE owner = $1 AND kind = $2 AND sender = $3", e.Owner, string(e.Kind), e.Sender)
	if err == nil && n == 0 {
		err = state.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("list %s: remove %s %s: %w", e.Owner, e.Kind, e.Sender, err)
	}
	return nil
}

// Entries implements state.Lists.
func (l *lists) Entries(ctx context.Context, owner string) (_ []state.ListEntry, err error) {
	var w where
	if owner != "" {
		// Owners are kept as keys (state.CanonicalEntry).
		w.add("owner = ?", address.Key(owner))
	}
	ctx, end := (*Store)(l).op(ctx)
	defer end(&err)
	rs, err := l.db.query(ctx, "SELECT owner, kind, sender, added, added_by FROM list_entries"+w.String()+" ORDER BY owner, kind, sender", w.args...)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", owner, err)
	}
	defer rs.Close()
	var out []state.ListEntry
	for rs.Next() {
		var e state.ListEntry
		var kind string
		var added int64
		if err := rs.Scan(&e.Owner, &kind, &e.Sender, &added, &e.By); err != nil {
			return nil, fmt.Errorf("list %s: %w", owner, err)
		}
		e.Kind, e.Added = state.ListKind(kind), fromMicros(added)
		out = append(out, e)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list %s: %w", owner, err)
	}
	return out, nil
}
