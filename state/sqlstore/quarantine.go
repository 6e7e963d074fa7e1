package sqlstore

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
)

// partSize is the most message bytes in one row of quarantine_parts.
const partSize = 1 << 20

type quarantine Store

// Put implements state.Quarantine.
func (q *quarantine) Put(ctx context.Context, rec *state.QuarantineRecord, msg io.Reader) (err error) {
	if rec.ID == "" {
		return errors.New("quarantine: record without ID")
	}
	if rec.Node == "" {
		rec.Node = q.node
	}
	if rec.Time.IsZero() {
		rec.Time = now()
	}
	rec.Time = rec.Time.UTC().Truncate(time.Microsecond) // as the time column holds it
	// A new message: releases are made by BeginRelease and EndRelease.
	rec.Releasing, rec.Released, rec.ReleaseNode, rec.ReleasedAt, rec.ReleasingSince = "", "", "", time.Time{}, time.Time{}
	rec.ReleasingRcpts, rec.Releases = nil, nil
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	err = q.db.inTx(ctx, func(tx querier) error {
		// The row first: of two Puts of one ID, the second finds it
		// (waiting for the first to commit) and stops.
		n, err := tx.exec(ctx, `INSERT INTO quarantine (id, node, time, sender_key, rcpts_key, stages_key, size, parts, record)
			VALUES ($1, $2, $3, $4, $5, $6, 0, 0, '') ON CONFLICT (id) DO NOTHING`,
			rec.ID, rec.Node, micros(rec.Time), strings.ToLower(rec.From), lines(rec.Rcpts), stagesKey(rec))
		if err != nil {
			return err
		}
		if n == 0 {
			return state.ErrExists
		}
		size, parts, err := putParts(ctx, tx, rec.ID, msg)
		if err != nil {
			return err
		}
		rec.Size = size
		b, err := json.Marshal(rec)
		if err != nil {
			return err
		}
		_, err = tx.exec(ctx, "UPDATE quarantine SET size = $2, parts = $3, record = $4 WHERE id = $1", rec.ID, size, parts, string(b))
		return err
	})
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", rec.ID, err)
	}
	return nil
}

// putParts stores what msg holds as parts of message id.
func putParts(ctx context.Context, tx querier, id string, msg io.Reader) (size, parts int64, err error) {
	buf := make([]byte, partSize)
	for {
		n, err := io.ReadFull(msg, buf)
		if n > 0 {
			if _, err := tx.exec(ctx, "INSERT INTO quarantine_parts (id, seq, data) VALUES ($1, $2, $3)", id, parts, buf[:n]); err != nil {
				return 0, 0, err
			}
			size += int64(n)
			parts++
		}
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			return size, parts, nil
		case err != nil:
			return 0, 0, fmt.Errorf("read message: %w", err)
		}
	}
}

// stagesKey lists the stages a Stage filter finds rec by: the one that
// decided, and those that added to the score or gave a verdict other
// than continue.
func stagesKey(rec *state.QuarantineRecord) string {
	var names []string
	if rec.Stage != "" {
		names = append(names, rec.Stage)
	}
	for _, v := range rec.Verdicts {
		if v.Action != stages.Continue || v.Score > 0 {
			names = append(names, v.Name)
		}
	}
	return lines(names)
}

const quarantineColumns = "record, releasing, released, release_node, released_at"

// scanRecord reads a row of quarantineColumns.
func scanRecord(rs interface{ Scan(...any) error }) (*state.QuarantineRecord, error) {
	var (
		data                             string
		releasing, released, releaseNode string
		releasedAt                       int64
	)
	if err := rs.Scan(&data, &releasing, &released, &releaseNode, &releasedAt); err != nil {
		return nil, err
	}
	rec := new(state.QuarantineRecord)
	if err := json.Unmarshal([]byte(data), rec); err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	rec.Releasing, rec.Released, rec.ReleaseNode, rec.ReleasedAt = releasing, released, releaseNode, fromMicros(releasedAt)
	return rec, nil
}

func getRecord(ctx context.Context, q querier, id string) (*state.QuarantineRecord, error) {
	rs, err := q.query(ctx, "SELECT "+quarantineColumns+" FROM quarantine WHERE id = $1", id)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return nil, err
		}
		return nil, state.ErrNotFound
	}
	return scanRecord(rs)
}

// Get implements state.Quarantine.
func (q *quarantine) Get(ctx context.Context, id string) (_ *state.QuarantineRecord, err error) {
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	rec, err := getRecord(ctx, q.db, id)
	if err != nil {
		return nil, fmt.Errorf("quarantine %s: %w", id, err)
	}
	return rec, nil
}

// List implements state.Quarantine.
func (q *quarantine) List(ctx context.Context, f state.QuarantineFilter) (_ []*state.QuarantineRecord, err error) {
	var w where
	if f.From != "" {
		w.contains("sender_key", f.From, false)
	}
	if f.Rcpt != "" {
		w.contains("rcpts_key", f.Rcpt, false)
	}
	if f.Stage != "" {
		w.contains("stages_key", f.Stage, true)
	}
	if !f.Since.IsZero() {
		w.add("time >= ?", micros(f.Since))
	}
	if !f.Until.IsZero() {
		w.add("time < ?", micros(f.Until))
	}
	if f.ReleasingOn != "" {
		w.add("releasing <> '' AND release_node = ?", f.ReleasingOn)
	}
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	rs, err := q.db.query(ctx, "SELECT "+quarantineColumns+" FROM quarantine"+w.String()+" ORDER BY time, id", w.args...)
	if err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	defer rs.Close()
	var out []*state.QuarantineRecord
	for rs.Next() {
		rec, err := scanRecord(rs)
		if err != nil {
			return nil, fmt.Errorf("list quarantine: %w", err)
		}
		out = append(out, rec)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("list quarantine: %w", err)
	}
	return out, nil
}

// Message implements state.Quarantine.
func (q *quarantine) Message(ctx context.Context, id string) (_ io.ReadCloser, err error) {
	var parts int64
	qctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	err = queryRow(qctx, q.db, "SELECT parts FROM quarantine WHERE id = $1", []any{id}, &parts)
	if errors.Is(err, errNoRows) {
		return nil, notFound("quarantine " + id)
	}
	if err != nil {
		return nil, fmt.Errorf("quarantine %s: %w", id, err)
	}
	return &partReader{s: (*Store)(q), ctx: ctx, id: id, parts: parts}, nil
}

// partReader reads a message one part at a time.
type partReader struct {
	s     *Store
	ctx   context.Context
	id    string
	parts int64 // how many there are
	next  int64 // the part to read next
	buf   []byte
}

func (r *partReader) Read(p []byte) (int, error) {
	for len(r.buf) == 0 {
		if r.next == r.parts {
			return 0, io.EOF
		}
		if err := r.readPart(); err != nil {
			return 0, err
		}
	}
	n := copy(p, r.buf)
	r.buf = r.buf[n:]
	return n, nil
}

// readPart reads the next part into buf, an operation of its own.
func (r *partReader) readPart() (err error) {
	ctx, end := r.s.op(r.ctx)
	defer end(&err)
	err = queryRow(ctx, r.s.db, "SELECT data FROM quarantine_parts WHERE id = $1 AND seq = $2", []any{r.id, r.next}, &r.buf)
	if errors.Is(err, errNoRows) {
		return fmt.Errorf("quarantine %s: deleted while being read: %w", r.id, state.ErrNotFound)
	}
	if err != nil {
		return fmt.Errorf("quarantine %s: %w", r.id, err)
	}
	r.next++
	return nil
}

func (r *partReader) Close() error { r.buf, r.next = nil, r.parts; return nil }

// Delete implements state.Quarantine.
func (q *quarantine) Delete(ctx context.Context, id string) (err error) {
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	err = q.db.inTx(ctx, func(tx querier) error {
		n, err := tx.exec(ctx, "DELETE FROM quarantine WHERE id = $1", id)
		if err != nil {
			return err
		}
		if n == 0 {
			return state.ErrNotFound
		}
		_, err = tx.exec(ctx, "DELETE FROM quarantine_parts WHERE id = $1", id)
		return err
	})
	if err != nil {
		return fmt.Errorf("quarantine delete %s: %w", id, err)
	}
	return nil
}

// BeginRelease implements state.Quarantine. The UPDATE decides: of two
// concurrent ones, PostgreSQL makes the second wait for the first to
// commit and then finds its condition false; SQLite runs one transaction
// at a time. The row it takes is this transaction's until it ends, so
// the record read next is the latest and written back whole; a release
// refused for a recipient rolls the UPDATE back.
func (q *quarantine) BeginRelease(ctx context.Context, id, node, copyID string, rcpts []string) (_ *state.QuarantineRecord, err error) {
	if copyID == "" || node == "" {
		return nil, fmt.Errorf("release %s: no node or copy named", id)
	}
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	var rec *state.QuarantineRecord
	err = q.db.inTx(ctx, func(tx querier) error {
		n, err := tx.exec(ctx, "UPDATE quarantine SET releasing = $2, release_node = $3 WHERE id = $1 AND releasing = '' AND released = ''", id, copyID, node)
		if err != nil {
			return err
		}
		if rec, err = getRecord(ctx, tx, id); err != nil {
			return err
		}
		switch {
		case n == 0 && rec.Releasing == "" && rec.Released == "":
			// The release that stopped the UPDATE ended since: this
			// transaction holds nothing to write with.
			return fmt.Errorf("%w: another release ended meanwhile; try again", state.ErrReleasing)
		case n == 1:
			rec.Releasing = ""
		}
		// n == 0: Begin says why, released or whose release is under way.
		if _, err := rec.Begin(copyID, rcpts); err != nil {
			return err
		}
		rec.ReleaseNode, rec.ReleasingSince = node, now()
		return putRecord(ctx, tx, rec)
	})
	if err != nil {
		return nil, fmt.Errorf("release %s: %w", id, err)
	}
	return rec, nil
}

// putRecord writes rec back to its row, whose release columns say the
// same.
func putRecord(ctx context.Context, tx querier, rec *state.QuarantineRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = tx.exec(ctx, "UPDATE quarantine SET record = $2, releasing = $3, released = $4, release_node = $5, released_at = $6 WHERE id = $1",
		rec.ID, string(b), rec.Releasing, rec.Released, rec.ReleaseNode, micros(rec.ReleasedAt))
	return err
}

// EndRelease implements state.Quarantine. Ending a release twice the
// same way is no error: a node that crashed after the first may do it
// again.
func (q *quarantine) EndRelease(ctx context.Context, id, copyID string, queued bool) (err error) {
	ctx, end := (*Store)(q).op(ctx)
	defer end(&err)
	err = q.db.inTx(ctx, func(tx querier) error {
		// Taking the row first, as BeginRelease does.
		n, err := tx.exec(ctx, "UPDATE quarantine SET releasing = releasing WHERE id = $1 AND releasing = $2", id, copyID)
		if err != nil {
			return err
		}
		rec, err := getRecord(ctx, tx, id)
		switch {
		case err != nil:
			return err
		case n == 1 && queued:
			rec.Settle(copyID, rec.ReleasingRcpts, now())
			return putRecord(ctx, tx, rec)
		case n == 1:
			rec.Releasing, rec.ReleasingRcpts, rec.ReleaseNode, rec.ReleasingSince = "", nil, "", time.Time{}
			return putRecord(ctx, tx, rec)
		case queued && rec.ReleasedAs(copyID), !queued && rec.Releasing == "" && !rec.ReleasedAs(copyID):
			return nil
		}
		return fmt.Errorf("%w: %s (releasing %q, released %q)", state.ErrNotUnderWay, copyID, rec.Releasing, rec.Released)
	})
	if err != nil {
		return fmt.Errorf("release %s: %w", id, err)
	}
	return nil
}
