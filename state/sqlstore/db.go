package sqlstore

import (
	"context"
	"database/sql"
	"errors"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// The store's code is written once against these few operations, which
// pgx (PostgreSQL) and database/sql (SQLite) each provide with their own
// types. Queries number their parameters $1, $2, … as PostgreSQL does;
// for SQLite they become ?1, ?2, …, the same positional parameters.

// querier runs statements, inside a transaction or not.
type querier interface {
	exec(ctx context.Context, q string, args ...any) (rowsAffected int64, err error)
	query(ctx context.Context, q string, args ...any) (rows, error)
}

// rows is what pgx.Rows and *sql.Rows both offer.
type rows interface {
	Next() bool
	Scan(dest ...any) error
	Err() error
	Close()
}

// db is a pool of connections to one database.
type db interface {
	querier
	// inTx runs fn in a transaction, committed when fn returns nil and
	// rolled back otherwise.
	inTx(ctx context.Context, fn func(querier) error) error
	close()
}

// errNoRows is what queryRow returns when nothing is selected.
var errNoRows = errors.New("no rows")

// queryRow scans the first row q selects into dest.
func queryRow(ctx context.Context, q querier, sql string, args []any, dest ...any) error {
	rs, err := q.query(ctx, sql, args...)
	if err != nil {
		return err
	}
	defer rs.Close()
	if !rs.Next() {
		if err := rs.Err(); err != nil {
			return err
		}
		return errNoRows
	}
	if err := rs.Scan(dest...); err != nil {
		return err
	}
	return rs.Err()
}

// pgDB is PostgreSQL through a pgx pool.
type pgDB struct{ pool *pgxpool.Pool }

// pgRunner is what a pgx pool and a pgx transaction both offer.
type pgRunner interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

type pgQuerier struct{ r pgRunner }

func (q pgQuerier) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	tag, err := q.r.Exec(ctx, sql, args...)
	return tag.RowsAffected(), err
}

func (q pgQuerier) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return q.r.Query(ctx, sql, args...)
}

func (d pgDB) exec(ctx context.Context, sql string, args ...any) (int64, error) {
	return pgQuerier{d.pool}.exec(ctx, sql, args...)
}

func (d pgDB) query(ctx context.Context, sql string, args ...any) (rows, error) {
	return pgQuerier{d.pool}.query(ctx, sql, args...)
}

func (d pgDB) inTx(ctx context.Context, fn func(querier) error) error {
	return pgx.BeginTxFunc(ctx, d.pool, pgx.TxOptions{}, func(tx pgx.Tx) error { return fn(pgQuerier{tx}) })
}

func (d pgDB) close() { d.pool.Close() }

// sqlDB is SQLite through database/sql.
type sqlDB struct{ db *sql.DB }

type sqlRunner interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryContext(ctx context.Context, query string, args ...any) (*sql.Rows, error)
}

type sqlQuerier struct{ r sqlRunner }

// sqlRows gives *sql.Rows the Close of rows.
type sqlRows struct{ *sql.Rows }

func (r sqlRows) Close() { r.Rows.Close() }

// positional turns $1 into ?1: SQLite reads $1 as a parameter named
// "$1", numbered by its first appearance, not by its digits.
func positional(q string) string { return strings.ReplaceAll(q, "$", "?") }

func (q sqlQuerier) exec(ctx context.Context, query string, args ...any) (int64, error) {
	res, err := q.r.ExecContext(ctx, positional(query), args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

func (q sqlQuerier) query(ctx context.Context, query string, args ...any) (rows, error) {
	rs, err := q.r.QueryContext(ctx, positional(query), args...)
	if err != nil {
		return nil, err
	}
	return sqlRows{rs}, nil
}

func (d sqlDB) exec(ctx context.Context, query string, args ...any) (int64, error) {
	return sqlQuerier{d.db}.exec(ctx, query, args...)
}

func (d sqlDB) query(ctx context.Context, query string, args ...any) (rows, error) {
	return sqlQuerier{d.db}.query(ctx, query, args...)
}

func (d sqlDB) inTx(ctx context.Context, fn func(querier) error) error {
	tx, err := d.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(sqlQuerier{tx}); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

func (d sqlDB) close() { d.db.Close() }
