package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

type revocations Store

// Revocations implements state.Store.
func (s *Store) Revocations() state.Revocations { return (*revocations)(s) }

var _ state.Revocations = (*revocations)(nil)

// RevokeSession implements state.Revocations.
func (r *revocations) RevokeSession(ctx context.Context, id string, exp time.Time) (err error) {
	ctx, end := (*Store)(r).op(ctx)
	defer end(&err)
	err = r.db.inTx(ctx, func(q querier) error {
		if _, err := q.exec(ctx, "DELETE FROM revoked_sessions WHERE expires <= $1", micros(now())); err != nil {
			return err
		}
		_, err := q.exec(ctx, `INSERT INTO revoked_sessions (id, expires) VALUES ($1, $2)
			ON CONFLICT (id) DO UPDATE SET expires = excluded.expires`, id, micros(exp))
		return err
	})
	if err != nil {
		return fmt.Errorf("revoke session: %w", err)
	}
	return nil
}

// SessionRevoked implements state.Revocations.
func (r *revocations) SessionRevoked(ctx context.Context, id string) (_ bool, err error) {
	ctx, end := (*Store)(r).op(ctx)
	defer end(&err)
	var n int64
	if err := queryRow(ctx, r.db, "SELECT COUNT(*) FROM revoked_sessions WHERE id = $1", []any{id}, &n); err != nil {
		return false, fmt.Errorf("revoked session: %w", err)
	}
	return n > 0, nil
}

// LinkGeneration implements state.Revocations.
func (r *revocations) LinkGeneration(ctx context.Context, rcpt string) (_ int64, err error) {
	ctx, end := (*Store)(r).op(ctx)
	defer end(&err)
	var gen int64
	err = queryRow(ctx, r.db, "SELECT generation FROM link_generations WHERE rcpt = $1", []any{address.Key(rcpt)}, &gen)
	switch {
	case err == errNoRows:
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("link generation of %s: %w", rcpt, err)
	}
	return gen, nil
}

// RevokeLinks implements state.Revocations.
func (r *revocations) RevokeLinks(ctx context.Context, rcpt string) (_ int64, err error) {
	ctx, end := (*Store)(r).op(ctx)
	defer end(&err)
	var gen int64
	err = queryRow(ctx, r.db, `INSERT INTO link_generations (rcpt, generation) VALUES ($1, 1)
		ON CONFLICT (rcpt) DO UPDATE SET generation = link_generations.generation + 1 RETURNING generation`,
		[]any{address.Key(rcpt)}, &gen)
	if err != nil {
		return 0, fmt.Errorf("revoke links of %s: %w", rcpt, err)
	}
	return gen, nil
}
