package sqlstore

import (
	"context"
	"fmt"
	"time"
)

type claims Store

// Claim implements state.Claims: the primary key lets one row per key
// in, whoever tries at the same moment; the row says whose it is.
func (c *claims) Claim(ctx context.Context, key, node string) (_ bool, err error) {
	ctx, end := (*Store)(c).op(ctx)
	defer end(&err)
	if _, err := c.db.exec(ctx, "INSERT INTO claims (claim_key, node, claimed) VALUES ($1, $2, $3) ON CONFLICT (claim_key) DO NOTHING", key, node, micros(now())); err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	var owner string
	if err := queryRow(ctx, c.db, "SELECT node FROM claims WHERE claim_key = $1", []any{key}, &owner); err != nil {
		return false, fmt.Errorf("claim %s: %w", key, err)
	}
	return owner == node, nil
}

// Expire implements state.Claims.
func (c *claims) Expire(ctx context.Context, t time.Time) (err error) {
	ctx, end := (*Store)(c).op(ctx)
	defer end(&err)
	if _, err := c.db.exec(ctx, "DELETE FROM claims WHERE claimed < $1", micros(t)); err != nil {
		return fmt.Errorf("expire claims: %w", err)
	}
	return nil
}
