package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/gateway/cluster"
	"github.com/mailgate/mailgate/gateway/state"
	"github.com/mailgate/mailgate/gateway/state/sqlstore"
)

const clusterUsage = `usage: mailgate cluster COMMAND [-config FILE] [flags]

  status           the nodes of the cluster: version, config, health and
                   last heartbeat of each; flags the stale ones and those
                   whose config differs from the one most nodes run

The cluster is the PostgreSQL of the config's [cluster] postgres; these
commands talk to it, not to a running gateway.
`

func cmdCluster(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, clusterUsage)
		return errUsage
	}
	sub := args[0]
	if isHelp(sub) {
		fmt.Fprint(stdout, clusterUsage)
		return nil
	}
	o := newOpFlags("cluster "+sub, stderr, clusterUsage)
	switch sub {
	case "status":
	default:
		fmt.Fprintf(stderr, "mailgate cluster: unknown command %q\n\n%s", sub, clusterUsage)
		return errUsage
	}
	if err := parseNone(o.fs, args[1:]); err != nil {
		return err
	}
	ctx := context.Background()
	st, err := o.clusterState(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
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

// clusterState opens the store the config's cluster shares.
func (o opFlags) clusterState(ctx context.Context) (*sqlstore.Store, error) {
	cfg, err := loadConfig(*o.config)
	if err != nil {
		return nil, err
	}
	cl := cfg.Cluster
	if cl.Postgres == "" {
		return nil, errors.New(configName(cfg) + ": no [cluster] postgres; these commands read the cluster's PostgreSQL")
	}
	return sqlstore.OpenPostgres(ctx, cl.Postgres, sqlstore.Options{Node: cl.Node,
		Timeout: time.Duration(cl.Timeout), ConnectTimeout: time.Duration(cl.ConnectTimeout), MaxConns: 2})
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
