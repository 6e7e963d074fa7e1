package cluster

import (
	"context"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// Store returns the node's store (state.Store): the SQLite file
// data_dir/state.db on one node (and in a cluster with Redis alone); the
// cluster's PostgreSQL with [cluster] postgres, whether it answers yet
// or not.
//
// In a cluster every operation goes to PostgreSQL, so that a list entry
// or an audit entry one node writes is what every node reads. While
// PostgreSQL is known to be away (an operation or a heartbeat found it
// unreachable) an operation fails at once with state.ErrUnavailable, and
// a second later one tries it again (every operation passes the node's
// failfast.Gate, sqlstore.Options.Gate), so that no caller waits for the
// timeout each time: the users' lists at RCPT fail open
// (console.ListCache keeps what it had), and the console says the store
// is unreachable.
func (n *Node) Store() state.Store {
	if n.local != nil {
		return n.local
	}
	return nodeStore{n.store, n}
}

// probeEvery is how often one operation may try PostgreSQL while it is
// known to be away; the others fail at once.
const probeEvery = time.Second

// nodeStore is the cluster's store as the node uses it.
type nodeStore struct {
	*sqlstore.Store
	n *Node
}

func (s nodeStore) Claims() state.Claims { return nodeClaims{s.Store.Claims(), s.n} }

// Close does nothing: the node closes its connections (Node.Close).
func (s nodeStore) Close() error { return nil }

type nodeClaims struct {
	state.Claims
	n *Node
}

// Claim fails without asking while another live process reports under
// the node's name and this one is the younger (state.NameWatch): the
// older claims, once for the name. An error, not a "no": the caller tries
// again later, as when PostgreSQL is away, so that what the older has
// not claimed after all (it stopped meanwhile) is still done.
func (c nodeClaims) Claim(ctx context.Context, key, node string) (bool, error) {
	if c.n.names.Yields() {
		return false, fmt.Errorf("claim %s: another live process reports under node name %q and started first (give each node its own [cluster] node)", key, node)
	}
	return c.Claims.Claim(ctx, key, node)
}
