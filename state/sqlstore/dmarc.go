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
func (d *dmarcRecords) Add(ctx context.Context, r state.DMARCRecord) (err error) {
	if r.Time.IsZero() {
		r.Time = now()
	}
	ctx, end := (*Store)(d).op(ctx)
	defer end(&err)
	// A record whose key the node sent before meets the unique index
	// and is not stored again.
	_, err = d.db.exec(ctx, "INSERT INTO dmarc_records (day, time, node, domain, data, record_key) VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING",
		day(r.Time), micros(r.Time), d.node, r.Domain, r.Row, r.Key)
	if err != nil {
		return fmt.Errorf("dmarc record: %w", err)
	}
	return nil
}

// Day implements state.DMARCRecords.
func (d *dmarcRecords) Day(ctx context.Context, t time.Time) (_ []state.DMARCRecord, err error) {
	ctx, end := (*Store)(d).op(ctx)
	defer end(&err)
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

// Expire implements state.DMARCRecords.
func (d *dmarcRecords) Expire(ctx context.Context, t time.Time) (err error) {
	ctx, end := (*Store)(d).op(ctx)
	defer end(&err)
	if _, err := d.db.exec(ctx, "DELETE FROM dmarc_records WHERE day < $1", day(t)); err != nil {
		return fmt.Errorf("expire dmarc records: %w", err)
	}
	return nil
}
