package sqlstore

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/state"
)

// Copied counts the rows Copy added to a store (or, for a revocation,
// raised), by kind.
type Copied struct {
	Lists    int // users' list entries
	Audit    int // audit log entries
	Sessions int // revoked console sessions
	Links    int // end users whose links were revoked
	Claims   int // work claimed (a day's digest of a recipient)
}

// copyBatch is how many rows Copy writes in one transaction, each
// transaction bounded by the store's timeout.
const copyBatch = 500

// Copy copies into s what src holds of the users' lists, the audit log,
// the console's revocations and the claims: mailgate cluster import,
// from the embedded store of a single node into the cluster's. It may run
// again, and counts only what s did not have, so that a second run copies
// nothing:
//
//   - a list entry s has (owner, kind, sender) is kept as s has it;
//   - an audit entry keeps its time, node and actor; it is the same
//     entry as one of s equal in every field, and an entry src has n
//     times is copied until s has it n times;
//   - a revoked session keeps its expiry, or takes src's where that is
//     later; one past its expiry is not copied;
//   - an end user's links take src's generation where s has a lower one,
//     so that every link src refused stays refused (a link made in a
//     generation s had passed already is refused too: it errs on the
//     side of a link that no longer works);
//   - a claim s has is kept as s has it, another node's or not.
func (s *Store) Copy(ctx context.Context, src *Store) (Copied, error) {
	var c Copied
	var err error
	if c.Lists, err = s.copyLists(ctx, src); err != nil {
		return c, fmt.Errorf("copy lists: %w", err)
	}
	if c.Audit, err = s.copyAudit(ctx, src); err != nil {
		return c, fmt.Errorf("copy audit log: %w", err)
	}
	if c.Sessions, err = s.copyRows(ctx, src, "SELECT id, expires FROM revoked_sessions WHERE expires > $1 ORDER BY id", []any{micros(now())},
		`INSERT INTO revoked_sessions (id, expires) VALUES ($1, $2)
		ON CONFLICT (id) DO UPDATE SET expires = excluded.expires WHERE revoked_sessions.expires < excluded.expires`,
		new(string), new(int64)); err != nil {
		return c, fmt.Errorf("copy revoked sessions: %w", err)
	}
	if c.Links, err = s.copyRows(ctx, src, "SELECT rcpt, generation FROM link_generations ORDER BY rcpt", nil,
		`INSERT INTO link_generations (rcpt, generation) VALUES ($1, $2)
		ON CONFLICT (rcpt) DO UPDATE SET generation = excluded.generation WHERE link_generations.generation < excluded.generation`,
		new(string), new(int64)); err != nil {
		return c, fmt.Errorf("copy revoked links: %w", err)
	}
	if c.Claims, err = s.copyRows(ctx, src, "SELECT claim_key, node, claimed FROM claims ORDER BY claim_key", nil,
		"INSERT INTO claims (claim_key, node, claimed) VALUES ($1, $2, $3) ON CONFLICT (claim_key) DO NOTHING",
		new(string), new(string), new(int64)); err != nil {
		return c, fmt.Errorf("copy claims: %w", err)
	}
	return c, nil
}

// copyLists copies src's list entries that s does not have.
func (s *Store) copyLists(ctx context.Context, src *Store) (int, error) {
	entries, err := src.Lists().Entries(ctx, "")
	if err != nil {
		return 0, err
	}
	rows := make([][]any, 0, len(entries))
	for _, e := range entries {
		// As Add keeps it: a store an older mailgate wrote may spell
		// an entry otherwise.
		e, err := state.CanonicalEntry(e)
		if err != nil {
			return 0, err
		}
		rows = append(rows, []any{e.Owner, string(e.Kind), e.Sender, micros(e.Added), e.By})
	}
	return s.insert(ctx, `INSERT INTO list_entries (owner, kind, sender, added, added_by) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (owner, kind, sender) DO NOTHING`, rows)
}

// copyAudit copies src's audit entries, each the nth of its kind (equal
// in every field) in src, where s has fewer than n of them.
func (s *Store) copyAudit(ctx context.Context, src *Store) (int, error) {
	type entry struct {
		time                                int64
		node, actor, action, target, detail string
	}
	rows, err := src.readRows(ctx, "SELECT time, node, actor, action, target, detail FROM audit_log ORDER BY seq", nil,
		new(int64), new(string), new(string), new(string), new(string), new(string))
	if err != nil {
		return 0, err
	}
	seen := map[entry]int{}
	for i, r := range rows {
		e := entry{r[0].(int64), r[1].(string), r[2].(string), r[3].(string), r[4].(string), r[5].(string)}
		seen[e]++
		rows[i] = append(r, seen[e])
	}
	return s.insert(ctx, `INSERT INTO audit_log (time, node, actor, action, target, detail)
		SELECT $1, $2, $3, $4, $5, $6
		WHERE (SELECT COUNT(*) FROM audit_log WHERE time = $1 AND node = $2 AND actor = $3 AND action = $4 AND target = $5 AND detail = $6) < $7`, rows)
}

// copyRows reads the rows query selects from src, scanned into dest
// (pointers, one a column), and runs insert in s with each; it returns
// how many rows insert changed.
func (s *Store) copyRows(ctx context.Context, src *Store, query string, args []any, insert string, dest ...any) (int, error) {
	rows, err := src.readRows(ctx, query, args, dest...)
	if err != nil {
		return 0, err
	}
	return s.insert(ctx, insert, rows)
}

// readRows returns the rows query selects, each the values scanned into
// dest.
func (s *Store) readRows(ctx context.Context, query string, args []any, dest ...any) (out [][]any, err error) {
	ctx, end := s.op(ctx)
	defer end(&err)
	rs, err := s.db.query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rs.Close()
	for rs.Next() {
		if err := rs.Scan(dest...); err != nil {
			return nil, err
		}
		row := make([]any, len(dest))
		for i, d := range dest {
			switch d := d.(type) {
			case *string:
				row[i] = *d
			case *int64:
				row[i] = *d
			default:
				panic(fmt.Sprintf("readRows: a column scanned into %T", d))
			}
		}
		out = append(out, row)
	}
	return out, rs.Err()
}

// insert runs stmt with each of rows as its arguments, copyBatch rows
// a transaction, and returns how many rows the statements changed.
func (s *Store) insert(ctx context.Context, stmt string, rows [][]any) (int, error) {
	total := 0
	for len(rows) > 0 {
		batch := rows[:min(copyBatch, len(rows))]
		rows = rows[len(batch):]
		n := 0
		err := func() (err error) {
			ctx, end := s.op(ctx)
			defer end(&err)
			return s.db.inTx(ctx, func(q querier) error {
				for _, args := range batch {
					changed, err := q.exec(ctx, stmt, args...)
					if err != nil {
						return err
					}
					n += int(changed)
				}
				return nil
			})
		}()
		if err != nil {
			return total, err
		}
		total += n
	}
	return total, nil
}
