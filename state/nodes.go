package state

import (
	"slices"
	"sync"
	"time"
)

// NodeStatus sets Stale and ConfigDiffers on nodes at time now. A node is
// stale when its last heartbeat is more than maxGap old. The config the
// cluster runs is the one most live nodes report; every node reporting
// another differs, stale or not. When live nodes are split evenly between
// configs there is no telling which is meant, and every node is flagged.
// No live node: no config to differ from, and none is flagged.
func NodeStatus(nodes []Node, now time.Time, maxGap time.Duration) {
	count := map[string]int{}
	for i := range nodes {
		n := &nodes[i]
		n.Stale = now.Sub(n.Heartbeat) > maxGap
		if !n.Stale {
			count[n.ConfigHash]++
		}
	}
	var major string
	best, tie := 0, false
	for hash, c := range count {
		switch {
		case c > best:
			major, best, tie = hash, c, false
		case c == best:
			tie = true
		}
	}
	for i := range nodes {
		n := &nodes[i]
		n.ConfigDiffers = len(count) > 0 && (tie || n.ConfigHash != major)
	}
}

// NameWatch tells, from what a node's heartbeats find in the registry,
// whether another live process reports under the node's name: a clone of
// a machine keeps its host name, the default name of a node. Two such
// processes would both win every claim (Claims decides by name) and
// could end each other's releases under way.
//
// A heartbeat reads the row it replaces (Nodes.Heartbeat). The row is
// this process's own when it holds the instance (Started) and a
// heartbeat this process wrote; anything else was written since by
// another process. The first heartbeat of a process tells nothing: the
// row may be that of the process it replaces (a restart, after a kill -9
// too), whose heartbeat is still fresh. Once this process wrote, a
// process that writes again under the name is a live other one: a clash,
// which both see, as each overwrites the other's row in turn. It ends
// when no heartbeat has found the other's writing for StaleAfter.
//
// The zero NameWatch, with StaleAfter set, is ready; it is safe for
// concurrent use.
type NameWatch struct {
	StaleAfter time.Duration

	mu   sync.Mutex
	last Node // what this process last wrote; zero before its first heartbeat
	// lost are the heartbeats written since that failed as far as this
	// process knows: one may have been committed all the same, its answer
	// lost with the connection.
	lost  []time.Time
	clear bool      // a heartbeat found the row as the one before had left it
	other Node      // the other process, while a clash is live
	since time.Time // when the clash began
	seen  time.Time // when a heartbeat last found the other's writing
}

// maxLost bounds the failed heartbeats a NameWatch remembers: more than
// five hours of them at one every 5 seconds, so that the answer lost at
// the start of a long outage is still known for this process's own when
// PostgreSQL is back.
const maxLost = 4096

// Failed records a heartbeat n whose writing failed.
func (w *NameWatch) Failed(n Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.lost) == maxLost {
		w.lost = w.lost[1:]
	}
	w.lost = append(w.lost, n.Heartbeat)
}

// Beat records a heartbeat that wrote n over was, and reports whether a
// clash began or ended with it.
func (w *NameWatch) Beat(was, n Node) (begun, ended bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	first := w.last.Started.IsZero()
	mine := first || was.Name == "" || was.Started.Equal(w.last.Started) &&
		(was.Heartbeat.Equal(w.last.Heartbeat) || slices.ContainsFunc(w.lost, was.Heartbeat.Equal))
	w.last, w.lost = n, nil
	switch {
	case !mine:
		begun = w.other.Name == ""
		if begun {
			w.since = n.Heartbeat
		}
		w.other, w.seen, w.clear = was, n.Heartbeat, false
		return begun, false
	case first:
		return false, false
	case w.other.Name != "" && n.Heartbeat.Sub(w.seen) >= w.StaleAfter:
		w.other, ended = Node{}, true
	}
	w.clear = w.other.Name == ""
	return false, ended
}

// Clash returns the other process last found writing under the name,
// and since when, while the clash is live.
func (w *NameWatch) Clash() (other Node, since time.Time, ok bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.other, w.since, w.other.Name != ""
}

// Yields reports whether this process is the younger of a live clash
// (started later): it should do nothing that must be done once for the
// cluster, and leave it to the older. A process that started at the same
// moment does not yield: that is a clone restored from a snapshot of a
// running machine, or this process's own write that a NameWatch could not
// tell for its own (an answer lost further back than it remembers), and
// a digest sent twice is better than none.
func (w *NameWatch) Yields() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.other.Name != "" && w.other.Started.Before(w.last.Started)
}

// Settled reports whether the name is this process's alone, as far as
// its heartbeats tell: one found the row as the heartbeat before had
// left it, and no clash is live. Until then another live process may
// be acting under the name.
func (w *NameWatch) Settled() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.clear && w.other.Name == ""
}
