package main

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/gateway/cluster"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

const clusterUsage = `usage: mailgate cluster COMMAND [-config FILE] [flags]

  status           the nodes of the cluster: version, config, health and
                   last heartbeat of each; flags the stale ones and those
                   whose config differs from the one most nodes run
  import           copy what this node kept on its own (its data_dir) into
                   the cluster's PostgreSQL, to move a single node into a
                   cluster: the quarantine (with what was released), the
                   traces and, from state.db, the users' lists, the audit
                   log, the console's revoked sessions and end users'
                   links, and the digests sent; it only reads the data_dir
                   (the node may run) and may run again: what is there
                   already is not copied twice
  remove NODE      take a node gone for good out of the cluster: the
                   releases from the quarantine it had under way (their
                   copies were in its spool, gone with it) end, so that
                   the messages can be released again, and the node
                   leaves the registry; refused for a node heard from in
                   the last 10 minutes

The cluster is the PostgreSQL of the config's [cluster] postgres; these
commands talk to it, not to a running gateway.
`

func cmdCluster(args []string, stdout, stderr io.Writer) error {
	sub, done, err := subcommand(args, clusterUsage, stdout, stderr)
	if done {
		return err
	}
	o := newOpFlags("cluster "+sub, stderr, clusterUsage)
	var node string
	switch sub {
	case "status", "import":
		if err := parseNone(o.fs, args[1:]); err != nil {
			return err
		}
	case "remove":
		rest, err := parseAll(o.fs, args[1:])
		if err != nil {
			return err
		}
		if len(rest) != 1 {
			fmt.Fprintf(stderr, "mailgate cluster remove: name one node (mailgate cluster status lists them)\n\n%s", clusterUsage)
			return errUsage
		}
		node = rest[0]
	default:
		fmt.Fprintf(stderr, "mailgate cluster: unknown command %q\n\n%s", sub, clusterUsage)
		return errUsage
	}
	ctx := context.Background()
	cfg, err := loadConfig(*o.config)
	if err != nil {
		return err
	}
	st, err := openShared(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.Close()
	switch sub {
	case "import":
		return clusterImport(ctx, cfg, st, stdout)
	case "remove":
		return clusterRemove(ctx, st, node, time.Now(), stdout)
	}
	nodes, err := st.Nodes().List(ctx)
	if err != nil {
		return err
	}
	now := time.Now()
	state.NodeStatus(nodes, now, cluster.StaleAfter)
	if *o.json {
		return printJSON(stdout, nodes)
	}
	return printNodes(stdout, nodes, now)
}

// openShared opens the store cfg's cluster shares in PostgreSQL.
func openShared(ctx context.Context, cfg *policy.Config) (*sqlstore.Store, error) {
	cl := cfg.Cluster
	if cl.Postgres == "" {
		return nil, errors.New(configName(cfg) + ": no [cluster] postgres; these commands read the cluster's PostgreSQL")
	}
	return sqlstore.OpenPostgres(ctx, cl.Postgres, sqlstore.Options{Node: cl.Node,
		Timeout: time.Duration(cl.Timeout), ConnectTimeout: time.Duration(cl.ConnectTimeout), MaxConns: 2})
}

// clusterImport copies what cfg's node kept on its own into st, and
// says how much of each kind. The data dir is read only, so the node may
// run: its state.db through a copy (sqlstore.OpenSQLiteSnapshot).
func clusterImport(ctx context.Context, cfg *policy.Config, st *sqlstore.Store, stdout io.Writer) error {
	dir := filepath.Join(cfg.DataDir, "quarantine")
	if fileExists(dir) {
		local := quarantine.Read(dir)
		recs, err := local.List(ctx, quarantine.Filter{}, time.Now())
		if err != nil {
			return err
		}
		n, err := quarantine.Copy(ctx, local, st.Quarantine(), cfg.Cluster.Node)
		if err != nil {
			return fmt.Errorf("quarantine: %d messages copied, then: %w", n, err)
		}
		fmt.Fprintf(stdout, "quarantine: %d messages copied, %d there already\n", n, len(recs)-n)
	}
	if dir := filepath.Join(cfg.DataDir, "trace"); fileExists(dir) {
		n, err := trace.Copy(ctx, dir, st.Traces())
		if err != nil {
			return fmt.Errorf("traces: %d events sent, then: %w", n, err)
		}
		fmt.Fprintf(stdout, "traces: %d events sent (each stored once)\n", n)
	}
	db := filepath.Join(cfg.DataDir, "state.db")
	if !fileExists(db) {
		fmt.Fprintf(stdout, "state.db: none in %s; no lists, audit log or revocations to copy\n", cfg.DataDir)
		return nil
	}
	local, err := sqlstore.OpenSQLiteSnapshot(ctx, db, sqlstore.Options{Node: cfg.Hostname})
	if err != nil {
		return err
	}
	defer local.Close()
	n, err := st.Copy(ctx, local)
	if err != nil {
		return fmt.Errorf("state.db: %w; what was copied stays, and an import run again copies the rest", err)
	}
	fmt.Fprintf(stdout, "lists: %d entries copied\naudit log: %d entries copied\nrevocations: %d sessions, the links of %d end users copied\ndigests sent: %d copied\n",
		n.Lists, n.Audit, n.Sessions, n.Links, n.Claims)
	return nil
}

// removeAfter is how long a node must have been silent for cluster remove
// to take it out: far longer than a restart or a short outage.
const removeAfter = 10 * time.Minute

// clusterRemove takes node, gone for good, out of st's cluster at now:
// the quarantine's releases it had under way end as not done (a copy it
// queued was in its spool, which went with it: the message may be
// released again, by any node), and its row leaves the registry. A node
// heard from in the last removeAfter is refused, stopped or not: it may
// come back with its spool, and carry on with its releases.
func clusterRemove(ctx context.Context, st *sqlstore.Store, node string, now time.Time, stdout io.Writer) error {
	nodes, err := st.Nodes().List(ctx)
	if err != nil {
		return err
	}
	state.NodeStatus(nodes, now, cluster.StaleAfter)
	i := slices.IndexFunc(nodes, func(n state.Node) bool { return n.Name == node })
	if i < 0 {
		var names []string
		for _, n := range nodes {
			names = append(names, n.Name)
		}
		return fmt.Errorf("no node %q in the cluster (it has %s)", node, cmp.Or(strings.Join(names, ", "), "none"))
	}
	if n := nodes[i]; now.Sub(n.Heartbeat) < removeAfter {
		// A node restarting, or cut off from PostgreSQL for a while, still
		// has its spool and its journal: its releases are its own to end.
		return fmt.Errorf("node %q was heard from %s ago (%s): remove a node only once it is gone for good, %v after its last heartbeat",
			node, now.Sub(n.Heartbeat).Round(time.Second), n.Health, removeAfter)
	}
	q := st.Quarantine()
	under, err := q.List(ctx, state.QuarantineFilter{ReleasingOn: node})
	if err != nil {
		return err
	}
	for _, rec := range under {
		if err := q.EndRelease(ctx, rec.ID, rec.Releasing, false); err != nil {
			return fmt.Errorf("quarantine %s: %w", rec.ID, err)
		}
		fmt.Fprintf(stdout, "quarantine %s: the release %s under way on %s ended; the message may be released again\n", rec.ID, rec.Releasing, node)
	}
	if err := st.Nodes().Remove(ctx, node); err != nil {
		return err
	}
	st.Audit().Record(ctx, state.AuditEntry{Actor: "cli", Action: "cluster.remove", Target: node,
		Detail: fmt.Sprintf("%d releases under way ended", len(under))})
	_, err = fmt.Fprintf(stdout, "node %s removed from the cluster\n", node)
	return err
}

// findShared finds the events of message id in the traces of every node
// of cfg's cluster.
func findShared(cfg *policy.Config, id string) ([]trace.Event, error) {
	ctx := context.Background()
	st, err := openShared(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	return st.Traces().Find(ctx, id)
}

// printNodes writes the table of the nodes, then a line on what differs.
func printNodes(w io.Writer, nodes []state.Node, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tVERSION\tCONFIG\tHEALTH\tUP\tHEARTBEAT\tNOTE")
	stale, differ := 0, 0
	for _, n := range nodes {
		var note []string
		if n.Stale {
			stale++
			note = append(note, "stale")
		}
		if n.ConfigDiffers {
			differ++
			note = append(note, "config differs")
		}
		hash := n.ConfigHash
		if len(hash) > 12 {
			hash = hash[:12]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s ago\t%s\n", n.Name, n.Version, hash, n.Health,
			n.Heartbeat.Sub(n.Started).Round(time.Second), now.Sub(n.Heartbeat).Round(time.Second), strings.Join(note, ", "))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d nodes, %d stale (no heartbeat for %v), %d with a config that differs\n", len(nodes), stale, cluster.StaleAfter, differ)
	return err
}
