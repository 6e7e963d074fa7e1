package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// clusterBlocks make a mailgate a node of the cluster lines: each message
// counts against a rate limit kept in Redis (so high it never refuses),
// and its trace is shipped to PostgreSQL, with the node's heartbeat. What
// the lines measure against the plain mailgate line is that per-node cost
// of the shared state; the three-node line, how three nodes on this
// machine's cores share it (not a scaling claim: the nodes, the engines
// and the client share the same cores).
const clusterBlocks = `
[[ratelimit]]
name = "per-client"
key = "client_ip"
rate = 100000000
per = "1s"

[cluster]
postgres = %q
redis = %q
node = %q
`

// engines are the Redis and PostgreSQL of the cluster lines, started by
// examples/cluster/cluster.sh (the example's own script) on free ports.
type engines struct {
	run           string
	postgres, url string
}

// startEngines starts the engines, once for both cluster lines.
func (b *bench) startEngines(ctx context.Context) (*engines, error) {
	if b.engines != nil {
		return b.engines, nil
	}
	e := &engines{run: filepath.Join(b.dir, "cluster")}
	redisAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	pgAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	e.url = "redis://" + redisAddr + "/0"
	e.postgres = "postgres://mailgate@" + pgAddr + "/mailgate?sslmode=disable"
	script := func(cmd string) error {
		c := exec.CommandContext(ctx, filepath.Join(b.root, "examples", "cluster", "cluster.sh"), cmd)
		c.Env = append(os.Environ(), "RUN="+e.run, "REDIS_PORT="+port(redisAddr), "PG_PORT="+port(pgAddr))
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("cluster.sh %s: %w\n%s", cmd, err, out)
		}
		return nil
	}
	b.logf("starting Redis and PostgreSQL (examples/cluster/cluster.sh)")
	err = script("engines")
	b.onStop(func() {
		if err := script("stop"); err != nil {
			b.logf("%v", err)
		}
	})
	if err != nil {
		return nil, err
	}
	b.engines = e
	return e, nil
}

// pids are the engines' server processes, whose trees count in a
// cluster line's CPU and memory.
func (e *engines) pids() []int {
	var out []int
	for _, f := range []string{filepath.Join(e.run, "redis.pid"), filepath.Join(e.run, "pg", "postmaster.pid")} {
		b, _ := os.ReadFile(f)
		first, _, _ := strings.Cut(string(b), "\n")
		if pid, err := strconv.Atoi(strings.TrimSpace(first)); err == nil {
			out = append(out, pid)
		}
	}
	return out
}

func port(addr string) string { return addr[strings.LastIndex(addr, ":")+1:] }

// startCluster starts a cluster line's nodes (one, or three), each
// delivering to the line's sink. Without redis-server or PostgreSQL the
// line is skipped, with a note.
func (b *bench) startCluster(ctx context.Context, l *line) error {
	_, err := exec.LookPath("redis-server")
	pg, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl")
	if _, perr := exec.LookPath("pg_ctl"); err != nil || perr != nil && len(pg) == 0 {
		l.skip = "needs redis-server and PostgreSQL (make deps installs them)"
		return nil
	}
	e, err := b.startEngines(ctx)
	if err != nil {
		return err
	}
	n := 1
	if l.kind == lineCluster3 {
		n = 3
	}
	var nodes []*mailgateInstance
	for i := range n {
		name := fmt.Sprintf("%s-%d", l.name, i+1)
		node := strings.ReplaceAll(name, "+", "-") // a node name has no "+"
		m, note, err := b.startMailgate(ctx, l.bin, name, l.sink.addr, "", fmt.Sprintf(clusterBlocks, e.postgres, e.url, node))
		if err != nil || note != "" {
			l.skip = note
			return err
		}
		nodes, l.profiles = append(nodes, m), append(l.profiles, m.profile)
		if i == 0 {
			l.addr = m.addr
		} else {
			l.more = append(l.more, m.addr)
		}
	}
	l.roots = func() []int {
		var pids []int
		for _, m := range nodes {
			pids = append(pids, m.pid())
		}
		return append(pids, e.pids()...)
	}
	l.alive = func() error {
		var errs []error
		for _, m := range nodes {
			errs = append(errs, m.alive())
		}
		return errors.Join(errs...)
	}
	return nil
}
