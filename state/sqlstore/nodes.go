package sqlstore

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/state"
)

type nodes Store

// Heartbeat implements state.Nodes.
func (n *nodes) Heartbeat(ctx context.Context, node state.Node) error {
	if node.Name == "" {
		return errors.New("node heartbeat: no name")
	}
	if node.Heartbeat.IsZero() {
		node.Heartbeat = now()
	}
	ctx, cancel := (*Store)(n).ctx(ctx)
	defer cancel()
	_, err := n.db.exec(ctx, `INSERT INTO nodes (name, version, config_hash, health, started, heartbeat) VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (name) DO UPDATE SET version = excluded.version, config_hash = excluded.config_hash,
			health = excluded.health, started = excluded.started, heartbeat = excluded.heartbeat`,
		node.Name, node.Version, node.ConfigHash, node.Health, micros(node.Started), micros(node.Heartbeat))
	if err != nil {
		return fmt.Errorf("node %s heartbeat: %w", node.Name, err)
	}
	return nil
}

// List implements state.Nodes.
func (n *nodes) List(ctx context.Context) ([]state.Node, error) {
	ctx, cancel := (*Store)(n).ctx(ctx)
	defer cancel()
	rs, err := n.db.query(ctx, "SELECT name, version, config_hash, health, started, heartbeat FROM nodes ORDER BY name")
	if err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	defer rs.Close()
	var out []state.Node
	for rs.Next() {
		var node state.Node
		var started, beat int64
		if err := rs.Scan(&node.Name, &node.Version, &node.ConfigHash, &node.Health, &started, &beat); err != nil {
			return nil, fmt.Errorf("nodes: %w", err)
		}
		node.Started, node.Heartbeat = fromMicros(started), fromMicros(beat)
		out = append(out, node)
	}
	if err := rs.Err(); err != nil {
		return nil, fmt.Errorf("nodes: %w", err)
	}
	return out, nil
}

// Remove implements state.Nodes.
func (n *nodes) Remove(ctx context.Context, name string) error {
	ctx, cancel := (*Store)(n).ctx(ctx)
	defer cancel()
	c, err := n.db.exec(ctx, "DELETE FROM nodes WHERE name = $1", name)
	if err == nil && c == 0 {
		err = state.ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("node %s: %w", name, err)
	}
	return nil
}
