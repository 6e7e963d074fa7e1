package console

import (
	"errors"
	"net/http"
	"time"

	"github.com/mailgate/mailgate/state"
)

type nodesData struct {
	Nodes               []state.Node
	Stale, Differ       int
	StaleAfter, Problem string
	Now                 time.Time
}

// nodes lists the nodes of the cluster as they last reported themselves
// (state.NodeStatus): version, config hash, health, start, heartbeat;
// the stale and those whose config is not the one most live nodes run
// are marked, as `mailgate cluster status` marks them.
func (c *Console) nodes(w http.ResponseWriter, r *http.Request, v view) {
	if c.opts.Nodes == nil {
		c.fail(w, v, http.StatusNotFound, "This gateway is not part of a cluster with PostgreSQL: it has no other nodes.")
		return
	}
	d := nodesData{Now: c.opts.Now(), StaleAfter: c.opts.StaleAfter.String()}
	var err error
	if d.Nodes, err = c.opts.Nodes.List(r.Context()); err != nil {
		d.Problem = c.unreadable("The list of nodes", err)
	}
	state.NodeStatus(d.Nodes, d.Now, c.opts.StaleAfter)
	for _, n := range d.Nodes {
		if n.Stale {
			d.Stale++
		}
		if n.ConfigDiffers {
			d.Differ++
		}
	}
	v.Title, v.Nav, v.Data = "Nodes", "nodes", d
	c.render(w, http.StatusOK, "nodes", v)
}

// unreadable logs why what could not be read and returns what a page
// says of it: that the cluster's store is unreachable (the banner says
// since when), or that the log says why.
func (c *Console) unreadable(what string, err error) string {
	if errors.Is(err, state.ErrUnavailable) {
		c.log.Warn("web: "+what+" not read", "err", err)
		return what + " cannot be read while the cluster's PostgreSQL is unreachable; try again when it answers."
	}
	c.log.Error("web: "+what+" not read", "err", err)
	return what + " could not be read; the log says why."
}

// failCode is the status of a page that could not be made for err: 503
// while the cluster's store is unreachable (it will be back), 500
// otherwise.
func failCode(err error) int {
	if errors.Is(err, state.ErrUnavailable) {
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}
