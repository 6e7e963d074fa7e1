package sqlstore

import (
	"context"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/state"
)

type dmarcRecords Store

// day names the UTC day of t as the dmarc tables do.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Add implements state.DMARCRecords.
func (d *dmarcRecords) Add(ctx context.Context, r state.DMARCRecord) error {
	if r.Time.IsZero() {
		r.Time = now()
	}
	ctx, cancel := (*Store)(d).ctx(ctx)
	defer cancel()
	_, err := d.db.exec(ctx, "INSERT INTO dmarc_records (day, time, node, domain, data) VALUES ($1, $2, $3, $4, $5)",
		day(r.Time), micros(r.Time), d.node, r.Domain, r.Row)
	if err != nil {
		return fmt.Errorf("dmarc record: %w", err)
	}
	return nil
}

// Day implements state.DMARCRecords.
func (d *dmarcRecords) Day(ctx context.Context, t time.Time) ([]state.DMARCRecord, error) {
	ctx, cancel := (*Store)(d).ctx(ctx)
	defer cancel()
	rs, err := d.db.query(ctx, "SELECT time, domain, data FROM dmarc_records WHERE day = $1 ORDER BY seq", day(t))
	if err != nil {
		return nil, fmt.Errorf("dmarc records of %s: %w", day(t), err)
	}
	defer rs.Close()
	var out []state.DMARCRecord
	for rs.Next() {
		var r state.DMARCRecord
		var at int64
		if err := rs.Scan(&at, &r.Domain, &r.Row); err != nil {
			return nil, fmt.Errorf("dmarc records of %s: %w", day(t), err)
		}
		r.Time = fromMicros(at)
		out = append(out, r)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("dmarc records of %s: %w", day(t), err)
	}
	return out, nil
}

// ClaimDay implements state.DMARCRecords: the primary key lets one row
// per day in, whoever tries at the same moment.
func (d *dmarcRecords) ClaimDay(ctx context.Context, t time.Time, node string) (bool, error) {
	ctx, cancel := (*Store)(d).ctx(ctx)
	defer cancel()
	n, err := d.db.exec(ctx, "INSERT INTO dmarc_days (day, node, claimed) VALUES ($1, $2, $3) ON CONFLICT (day) DO NOTHING", day(t), node, micros(now()))
	if err != nil {
		return false, fmt.Errorf("dmarc reports of %s: %w", day(t), err)
	}
	return n == 1, nil
}

// Expire implements state.DMARCRecords.
func (d *dmarcRecords) Expire(ctx context.Context, t time.Time) error {
	ctx, cancel := (*Store)(d).ctx(ctx)
	defer cancel()
	err := d.db.inTx(ctx, func(tx querier) error {
		if _, err := tx.exec(ctx, "DELETE FROM dmarc_records WHERE day < $1", day(t)); err != nil {
			return err
		}
		_, err := tx.exec(ctx, "DELETE FROM dmarc_days WHERE day < $1", day(t))
		return err
	})
	if err != nil {
		return fmt.Errorf("expire dmarc records: %w", err)
	}
	return nil
}
