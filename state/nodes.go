package state

import "time"

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
