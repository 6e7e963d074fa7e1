package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/state"
)

type nodes Store

// Heartbeat implements state.Nodes. The row is taken first, as
// BeginRelease takes its own: of two heartbeats under one name at the
// same moment, PostgreSQL makes the second wait for the first to commit,
// and the second reads what the first wrote; SQLite runs one
// transaction at a time.
func (n *nodes) Heartbeat(ctx context.Context, node state.Node) (_ state.Node, err error) {
	if node.Name == "" {
		return state.Node{}, errors.New("node heartbeat: no name")
	}
	if node.Heartbeat.IsZero() {
		node.Heartbeat = now()
	}
	ctx, end := (*Store)(n).op(ctx)
	defer end(&err)
	var was state.Node
	err = n.db.inTx(ctx, func(tx querier) error {
		if _, err := tx.exec(ctx, "UPDATE nodes SET heartbeat = heartbeat WHERE name = $1", node.Name); err != nil {
			return err
		}
		rs, err := tx.query(ctx, "SELECT "+nodeColumns+" FROM nodes WHERE name = $1", node.Name)
		if err != nil {
			return err
		}
		defer rs.Close()
		if rs.Next() {
			if was, err = scanNode(rs); err != nil {
				return err
			}
		}
		if err := rs.Err(); err != nil {
			return err
		}
		rs.Close()
		_, err = tx.exec(ctx, `INSERT INTO nodes (name, version, config_hash, health, started, heartbeat) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (name) DO UPDATE SET version = excluded.version, config_hash = excluded.config_hash,
				health = excluded.health, started = excluded.started, heartbeat = excluded.heartbeat`,
			node.Name, node.Version, node.ConfigHash, node.Health, micros(node.Started), micros(node.Heartbeat))
		return err
	})
	if err != nil {
		return state.Node{}, fmt.Errorf("node %s heartbeat: %w", node.Name, err)
	}
	return was, nil
}

const nodeColumns = "name, version, config_hash, health, started, heartbeat"

func scanNode(rs rows) (state.Node, error) {
	var node state.Node
	var started, beat int64
	if err := rs.Scan(&node.Name, &node.Version, &node.ConfigHash, &node.Health, &started, &beat); err != nil {
		return state.Node{}, err
	}
	node.Started, node.Heartbeat = fromMicros(started), fromMicros(beat)
	return node, nil
}

// List implements state.Nodes.
func (n *nodes) List(ctx context.Context) (_ []state.Node, err error) {
	ctx, end := (*Store)(n).op(ctx)
	defer end(&err)
	rs, err := n.db.query(ctx, "SELECT "+nodeColumns+" FROM nodes ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	defer rs.Close()
	var out []state.Node
	for rs.Next() {
		node, err := scanNode(rs)
		if err != nil {
			return nil, fmt.Errorf("nodes: %w", err)
		}
		out = append(out, node)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	return out, nil
}

// Remove implements state.Nodes.
func (n *nodes) Remove(ctx context.Context, name string) (err error) {
	ctx, end := (*Store)(n).op(ctx)
	defer end(&err)
	c, err := n.db.exec(ctx, "DELETE FROM nodes WHERE name = $1", name)
	if err == nil && c == 0 {
		err = state.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	return nil
}
