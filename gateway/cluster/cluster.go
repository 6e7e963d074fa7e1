// Package cluster joins a gateway to the other nodes of its [cluster]:
// it opens what they share, says where each part of the state is kept
// (shared, or under data_dir on one node), and reports on the engines in
// /healthz and the metrics. Without [cluster] it opens nothing, and the
// gateway keeps its state under data_dir as a single node does.
//
// Redis (stages/redisconn) holds the counters: the rate limits
// (policy/ratelimit) and the pre-greet cache (stages/recstore); the
// greylist stage opens its own client in its plugin process. While Redis
// is unreachable each of them fails open, and /healthz says "degraded".
package cluster

import (
	"context"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/gateway/admin"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/stages/recstore"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// Node is this gateway as a node of its cluster.
type Node struct {
	cfg    *policy.Config
	log    *slog.Logger
	redis  *redisconn.Client // nil without [cluster] redis
	limits *ratelimit.File   // the rate limits' state on one node
}

// Open opens the engines cfg's [cluster] names; they need not be up.
// Metrics of the engines are registered with reg.
func Open(cfg *policy.Config, log *slog.Logger, reg prometheus.Registerer) (*Node, error) {
	n := &Node{cfg: cfg, log: log}
	if cfg.Cluster.Redis != "" {
		var err error
		if n.redis, err = redisconn.Open(cfg.StageEnv().Redis, log); err != nil {
			return nil, err
		}
		reg.MustRegister(
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailgate_cluster_redis_up",
				Help: "1 while the node's last command to the cluster's Redis got an answer, 0 while Redis is unreachable."},
				func() float64 { return up(n.redis.Err()) }),
			prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailgate_cluster_redis_failures_total",
				Help: "Commands to the cluster's Redis that found it unreachable, or failed at once while it was; each failed open."},
				func() float64 { return float64(n.redis.Failures()) }))
	}
	return n, nil
}

func up(err error) float64 {
	if err != nil {
		return 0
	}
	return 1
}

// RateLimits returns the store of the [[ratelimit]] state: Redis in a
// cluster; on one node, a ratelimit.File under data_dir, saved by Close.
func (n *Node) RateLimits(o ratelimit.FileOptions) ratelimit.Store {
	if n.redis != nil {
		return ratelimit.NewRedis(n.redis)
	}
	n.limits = ratelimit.OpenFile(filepath.Join(n.cfg.DataDir, "ratelimit"), o)
	return n.limits
}

// Pregreet returns the store of the pre-greet cache in a cluster, and nil
// on one node, whose cache smtpd keeps under data_dir.
func (n *Node) Pregreet(now func() time.Time) recstore.Store {
	if n.redis == nil {
		return nil
	}
	return recstore.NewRedis(n.redis, "pregreet", now)
}

// Health says whether each engine answers. An engine away is degraded,
// not down: what it holds fails open, and mail is taken without it.
func (n *Node) Health(ctx context.Context) admin.Health {
	var h admin.Health
	if n.redis != nil {
		c := admin.Check{Name: "redis", Status: admin.OK, Detail: "reachable"}
		if err := n.redis.Health(ctx); err != nil {
			c.Status = admin.Degraded
			c.Detail = "unreachable: " + err.Error() + "; rate limits, greylisting and the pre-greet test fail open"
		}
		h = append(h, c)
	}
	return h
}

// Close saves the rate limits of one node and closes the connections.
func (n *Node) Close() {
	if n.limits != nil {
		n.limits.Close()
	}
	if n.redis != nil {
		n.redis.Close()
	}
}
