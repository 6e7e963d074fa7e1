// Package cluster joins a gateway to the other nodes of its [cluster]:
// it opens what they share, says where each part of the state is kept
// (shared, or under data_dir on one node), and reports on the engines in
// /healthz, the metrics and the console (Engines). Without [cluster] it
// opens the node's own store, SQLite under data_dir (Store), and the
// gateway keeps the rest of its state under data_dir as a single node
// does.
//
// Redis (stages/redisconn) holds the counters and caches: the rate limits
// (policy/ratelimit), the pre-greet cache (stages/recstore) and the
// answers of verify_rcpts probes (Verdicts); the greylist stage opens its
// own client in its plugin process. While Redis is unreachable each of
// them fails open, and /healthz says "degraded".
//
// PostgreSQL (state/sqlstore) is the node's store (Store): the quarantine
// (quarantine.Shared, which keeps messages on the node's disk while
// PostgreSQL is away and moves them when it is back), the traces (the
// node's trace files, shipped by trace.Ship), the users' lists and the
// audit log, the DMARC records (the dmarc stage's day files, collected:
// dmarc.go), the claims of what one node does for all, and the registry
// of nodes: each node writes its name, version, config hash and health
// every HeartbeatEvery, and `mailgate cluster status` lists them. A node
// starts whether PostgreSQL answers or not, and connects (migrating the
// schema) when it does.
//
// A node's name must be its own: claims go by name, the DMARC records
// of a node are stored once under their name and key, and the
// quarantine's releases under way are the name's. Each heartbeat tells
// by the row it replaces whether another live process writes under the
// name (state.NameWatch: a restart is no clash). While one does, both
// log an error and say "node name: degraded" in Engines and /healthz;
// the younger process claims nothing (Store's Claims answer false
// without asking) and leaves its DMARC day files on disk; neither ends
// the releases under way under the name that its journal does not know
// (quarantine.Share's mine), which a process does only once a heartbeat
// found the row as the one before left it. The clash ends StaleAfter
// after the other's last heartbeat.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/stages/failfast"
	"github.com/mailgate/mailgate/stages/recstore"
	"github.com/mailgate/mailgate/stages/redisconn"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

// HeartbeatEvery is how often a node reports itself; a node silent for
// StaleAfter is listed as stale.
const (
	HeartbeatEvery = 5 * time.Second
	StaleAfter     = 30 * time.Second
)

// Node is this gateway as a node of its cluster.
type Node struct {
	cfg     *policy.Config
	log     *slog.Logger
	version string
	started time.Time
	redis   *redisconn.Client // nil without [cluster] redis
	limits  *ratelimit.File   // the rate limits' state on one node
	quar    *quarantine.Shared
	local   *sqlstore.Store // the store of one node, under data_dir; nil with [cluster] postgres
	// beatEvery is HeartbeatEvery, and names.StaleAfter StaleAfter,
	// but in tests.
	beatEvery time.Duration
	names     state.NameWatch // whether another live process reports under the node's name
	// store is the cluster's PostgreSQL, nil without [cluster] postgres;
	// pg says whether it answers (every operation of store passes it).
	store *sqlstore.Store
	pg    *failfast.Gate
	// newerSchema is the schema version of the cluster's database when a
	// newer node migrated it past this one's, else 0 (heartbeat).
	newerSchema atomic.Int64
}

// Open opens the engines cfg's [cluster] names. Redis need not be up;
// PostgreSQL is tried once, within connect_timeout, and Run connects
// later if it did not answer. Metrics of the engines are registered with
// reg; version is what the node reports of itself.
func Open(ctx context.Context, cfg *policy.Config, log *slog.Logger, reg prometheus.Registerer, version string) (*Node, error) {
	// Started as the store keeps it, to the microsecond: the instance
	// that NameWatch tells by.
	n := &Node{cfg: cfg, log: log, version: version, started: time.Now().UTC().Truncate(time.Microsecond),
		beatEvery: HeartbeatEvery, names: state.NameWatch{StaleAfter: StaleAfter}}
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
	if cfg.Cluster.Postgres == "" {
		var err error
		if n.local, err = sqlstore.OpenSQLite(ctx, filepath.Join(cfg.DataDir, "state.db"), sqlstore.Options{Node: cfg.Hostname}); err != nil {
			n.Close()
			return nil, err
		}
	} else {
		cl := cfg.Cluster
		n.pg = failfast.New(failfast.Config{Down: state.ErrUnavailable, Retry: probeEvery, Log: log,
			Away: "postgres unreachable; the node takes mail and tries again", Back: "postgres answers again"})
		var err error
		if n.store, err = sqlstore.NewPostgres(cl.Postgres, sqlstore.Options{Node: cl.Node, Timeout: time.Duration(cl.Timeout),
			ConnectTimeout: time.Duration(cl.ConnectTimeout), MaxConns: int32(cl.MaxConns), Gate: n.pg}); err != nil {
			n.Close()
			return nil, err
		}
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "mailgate_cluster_postgres_up",
			Help: "1 while the cluster's PostgreSQL answered the node's last operation, 0 while it is unreachable."},
			func() float64 { return up(n.pg.Err()) }))
		ctx, cancel := context.WithTimeout(ctx, time.Duration(cl.ConnectTimeout))
		defer cancel()
		n.store.Connect(ctx)
	}
	return n, nil
}

// answeringFor is how long PostgreSQL has answered the node at now: 0
// while it does not.
func (n *Node) answeringFor(now time.Time) time.Duration {
	if !n.store.Connected() || n.pg.Err() != nil {
		return 0
	}
	return now.Sub(n.pg.UpSince())
}

// OpenQuarantine opens the node's quarantine: under data_dir on one
// node, shared in a cluster with PostgreSQL (and kept under data_dir
// while it is away).
func (n *Node) OpenQuarantine() (*quarantine.Shared, error) {
	local, err := quarantine.Open(filepath.Join(n.cfg.DataDir, "quarantine"))
	if err != nil {
		return nil, err
	}
	var shared func() state.Quarantine
	if n.cfg.Cluster.Postgres != "" {
		shared = func() state.Quarantine {
			if n.store.Connected() {
				return n.Store().Quarantine() // failing at once while PostgreSQL is away
			}
			return nil
		}
	}
	// The releases under way under the node's name are this process's
	// to end only while no other live process reports under it.
	n.quar, err = quarantine.Share(local, shared, n.cfg.Cluster.Node, n.names.Settled, n.log)
	return n.quar, err
}

// Run keeps the node in its cluster until ctx ends: it connects to
// PostgreSQL if need be, reports the node to the registry every
// HeartbeatEvery (report gives the hash of the config in force and the
// node's health, asking every engine; the last report, as it stops, says
// "stopped"), moves the quarantine kept on disk while PostgreSQL was
// away, ships the traces and collects the DMARC records (dmarc.go). With
// Redis alone it asks Redis every
// HeartbeatEvery, so that Engines is never older. Without [cluster] it
// does nothing.
func (n *Node) Run(ctx context.Context, report func() (configHash, health string)) {
	pg := n.cfg.Cluster.Postgres != ""
	if !pg && n.redis == nil {
		return
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	if n.quar != nil && pg {
		wg.Go(func() { n.quar.Run(ctx) })
	}
	if pg {
		wg.Go(func() {
			trace.Ship(ctx, filepath.Join(n.cfg.DataDir, "trace"), func() trace.Appender {
				if n.store.Connected() {
					return n.store.Traces()
				}
				return nil
			}, n.log)
		})
		wg.Go(func() { n.collectDMARC(ctx) })
	}
	t := time.NewTicker(n.beatEvery)
	defer t.Stop()
	for {
		switch {
		case pg && n.store.Connect(ctx) == nil:
			hash, health := report()
			n.heartbeat(ctx, hash, health)
		case n.redis != nil:
			n.redis.Health(ctx)
		}
		select {
		case <-ctx.Done():
			if pg && n.store.Connected() {
				// The gateway is stopping: a last word, bounded.
				ctx, cancel := context.WithTimeout(context.Background(), time.Duration(n.cfg.Cluster.Timeout))
				hash, _ := report()
				n.heartbeat(ctx, hash, "stopped")
				cancel()
			}
			return
		case <-t.C:
		}
	}
}

// keepClaims is how long claims are kept (state.Claims): longer than the
// work they name can be asked for again (a day's digests, the DMARC
// reports of the last week).
const keepClaims = 14 * 24 * time.Hour

// Expire deletes from the node's store what is past its time at now:
// the shared traces older than traceRetention (each node's own trace
// files expire with the node), the claims older than keepClaims and the
// DMARC records of days reported. A store that does not answer is left
// for the next time.
func (n *Node) Expire(now time.Time, traceRetention time.Duration) error {
	if n.store != nil && !n.store.Connected() {
		return nil
	}
	ctx, st := context.Background(), n.Store()
	var errs []error
	if n.cfg.Cluster.Postgres != "" {
		_, err := st.Traces().Expire(ctx, now.Add(-traceRetention))
		errs = append(errs, err)
	}
	err := errors.Join(append(errs, st.Claims().Expire(ctx, now.Add(-keepClaims)),
		st.DMARC().Expire(ctx, now.Add(-dmarcDays*24*time.Hour)))...)
	if errors.Is(err, state.ErrUnavailable) {
		return nil // the next time
	}
	return err
}

// heartbeat reports the node to the registry, and tells by the row it
// replaces whether another live process reports under the same name
// (state.NameWatch).
func (n *Node) heartbeat(ctx context.Context, hash, health string) {
	me := state.Node{Name: n.cfg.Cluster.Node, Version: n.version, ConfigHash: hash, Health: health,
		Started: n.started, Heartbeat: time.Now().UTC().Truncate(time.Microsecond)}
	was, err := n.store.Nodes().Heartbeat(ctx, me)
	if err != nil {
		n.names.Failed(me)
		return
	}
	n.checkSchema(ctx)
	switch begun, ended := n.names.Beat(was, me); {
	case begun:
		n.log.Error("another live process reports under this node's name: give each node its own [cluster] node",
			"node", me.Name, "other_started", was.Started, "other_version", was.Version, "started", me.Started, "note", n.nameDuty())
	case ended:
		n.log.Info("no other process reports under this node's name any more", "node", me.Name)
	}
}

// checkSchema notes whether a newer node has migrated the cluster's
// database past the schema this one knows, and logs it once: this node
// goes on taking mail, but what it writes to the database may fail or be
// misread until it is upgraded too.
func (n *Node) checkSchema(ctx context.Context) {
	v, err := n.store.SchemaInUse(ctx)
	if err != nil {
		return // the next heartbeat asks again
	}
	newer := 0
	if v > sqlstore.SchemaVersion() {
		newer = v
	}
	if old := n.newerSchema.Swap(int64(newer)); old != int64(newer) && newer != 0 {
		n.log.Error("a newer mailgate migrated the cluster's database: upgrade this node",
			"schema", newer, "this_node_knows", sqlstore.SchemaVersion(), "version", n.version)
	}
}

// nameDuty says what this process does while another reports under its
// name.
func (n *Node) nameDuty() string {
	if n.names.Yields() {
		return "this process started later: it claims nothing and keeps its DMARC records on disk until the other stops"
	}
	return "this process started first: it keeps its duties"
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

// Health says whether each engine answers, asking each. An engine away
// is degraded, not down: what it holds fails open or waits on local
// disk, and mail is taken without it.
func (n *Node) Health(ctx context.Context) admin.Health { return n.health(ctx, true) }

// Engines is Health as the node last found the engines, without asking
// them (the heartbeat asks every HeartbeatEvery): what the console says
// on every page, at no cost.
func (n *Node) Engines() admin.Health { return n.health(context.Background(), false) }

func (n *Node) health(ctx context.Context, probe bool) admin.Health {
	var h admin.Health
	if n.redis != nil {
		c := admin.Check{Name: "redis", Status: admin.OK, Detail: "reachable"}
		err := n.redis.Err()
		if probe {
			err = n.redis.Health(ctx)
		}
		if err != nil {
			c.Status, c.Since = admin.Degraded, n.redis.DownSince()
			c.Detail = "unreachable: " + err.Error() + "; rate limits, greylisting and the pre-greet test fail open"
		}
		h = append(h, c)
	}
	if n.cfg.Cluster.Postgres != "" {
		c := admin.Check{Name: "postgres", Status: admin.OK, Detail: "reachable"}
		if probe && n.store.Connected() {
			// Off the caller's context: a /healthz client that hangs up
			// says nothing of PostgreSQL.
			n.store.Ping(context.WithoutCancel(ctx))
		}
		err, since := n.pg.Err(), n.pg.DownSince()
		if !n.store.Connected() && err == nil {
			err, since = errors.New("not connected yet"), n.started
		}
		if err != nil {
			c.Status, c.Detail, c.Since = admin.Degraded, "unreachable: "+err.Error(), since
		}
		h = append(h, c)
		if v := n.newerSchema.Load(); v != 0 {
			h = append(h, admin.Check{Name: "schema", Status: admin.Degraded,
				Detail: fmt.Sprintf("the cluster's database has schema version %d, newer than this node's %d: a newer mailgate migrated it; upgrade this node", v, sqlstore.SchemaVersion())})
		}
		if other, since, clash := n.names.Clash(); clash {
			h = append(h, admin.Check{Name: "node name", Status: admin.Degraded, Since: since,
				Detail: fmt.Sprintf("another live process reports as node %q (started %s, version %s): give each node its own [cluster] node; %s",
					n.cfg.Cluster.Node, other.Started.Format(time.RFC3339), other.Version, n.nameDuty())})
		}
	}
	return h
}

// Close saves the rate limits of one node and closes the connections.
// Run must have returned.
func (n *Node) Close() {
	if n.local != nil {
		n.local.Close()
	}
	if n.limits != nil {
		n.limits.Close()
	}
	if n.redis != nil {
		n.redis.Close()
	}
	if n.store != nil {
		n.store.Close()
	}
}
