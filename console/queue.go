package console

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"slices"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
)

type queueData struct {
	From, Rcpt, State string
	Envs              []*spool.Envelope
	More              bool
	Problem           string
}

// maxQueueRows bounds the queue page: the oldest first, as they are the
// ones that need a look.
const maxQueueRows = 500

// queueList shows the queue: each message with each recipient's state,
// attempts and the next hop's last reply, oldest first.
func (c *Console) queueList(w http.ResponseWriter, r *http.Request, v view) {
	q := r.URL.Query()
	d := queueData{From: q.Get("from"), Rcpt: q.Get("rcpt"), State: q.Get("state")}
	envs, err := c.opts.Admin.Queue()
	if err != nil {
		c.log.Error("web queue", "err", err)
		d.Problem = "The queue could not be read; the log says why."
	}
	f := state.Filter{From: d.From, Rcpt: d.Rcpt}
	now := c.opts.Now()
	slices.SortFunc(envs, func(a, b *spool.Envelope) int { return a.Received.Compare(b.Received) })
	for _, env := range envs {
		rcpts := make([]string, len(env.Rcpts))
		for i, rc := range env.Rcpts {
			rcpts[i] = rc.Addr
		}
		switch {
		case !f.MatchMessage(env.From, rcpts, env.Received, now),
			d.State == "held" && !env.Held, d.State == "deferred" && (env.Held || env.Attempts == 0):
			continue
		case len(d.Envs) == maxQueueRows:
			d.More = true
		default:
			d.Envs = append(d.Envs, env)
		}
	}
	v.Title, v.Nav, v.Data = "Queue", "queue", d
	c.render(w, http.StatusOK, "queue", v)
}

// queueBulk runs an operation on the messages checked on the queue page.
func (c *Console) queueBulk(w http.ResponseWriter, r *http.Request, v view) {
	op, ids := r.PostFormValue("op"), r.PostForm["id"]
	if !slices.Contains(queueOps, op) || len(ids) == 0 {
		c.fail(w, v, http.StatusBadRequest, "Check messages and choose an operation.")
		return
	}
	var lines []string
	for _, id := range ids {
		err := c.opts.Admin.QueueOp(r.Context(), op, id)
		switch {
		case errors.Is(err, spool.ErrNotFound), errors.Is(err, fs.ErrNotExist):
			lines = append(lines, id+": no such message in the queue")
		case err != nil:
			c.log.Error("web queue", "op", op, "id", id, "err", err)
			lines = append(lines, id+": the operation failed; the log says why")
		default:
			c.audit(r.Context(), v, "queue."+op, id, "")
			lines = append(lines, id+": "+op+" done")
		}
	}
	c.done(w, v, "/queue", lines...)
}

// auditLog shows who did what, newest first.
func (c *Console) auditLog(w http.ResponseWriter, r *http.Request, v view) {
	q := r.URL.Query()
	f := state.AuditFilter{Actor: q.Get("actor"), Action: q.Get("action"), Target: q.Get("target"), Limit: 500}
	var d struct {
		Filter  state.AuditFilter
		Entries []state.AuditEntry
		Problem string
	}
	d.Filter = f
	if c.opts.Audit != nil {
		var err error
		if d.Entries, err = c.opts.Audit.Entries(r.Context(), f); err != nil {
			d.Problem = c.unreadable("The audit log", err)
		}
	}
	v.Title, v.Nav, v.Data = "Audit log", "audit", d
	c.render(w, http.StatusOK, "audit", v)
}

// queueOps are the operations on a queued message, as the CLI has them
// (the router's QueueOp).
var queueOps = []string{"retry", "hold", "release", "delete"}

func (c *Console) queueOp(w http.ResponseWriter, r *http.Request, v view) {
	op, id := r.PathValue("op"), r.PathValue("id")
	if !slices.Contains(queueOps, op) {
		c.fail(w, v, http.StatusNotFound, "No such operation.")
		return
	}
	err := c.opts.Admin.QueueOp(r.Context(), op, id)
	switch {
	case errors.Is(err, spool.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		c.fail(w, v, http.StatusNotFound, "No such message in the queue.")
		return
	case err != nil:
		c.log.Error("web queue", "op", op, "id", id, "err", err)
		c.fail(w, v, http.StatusInternalServerError, "The operation failed; the log says why.")
		return
	}
	c.audit(r.Context(), v, "queue."+op, id, "")
	c.done(w, v, "/queue", "Queued message "+id+": "+op+" done.")
}

// audit records what the user of v did.
func (c *Console) audit(ctx context.Context, v view, action, target, detail string) {
	actor := "console:" + v.Rcpt
	if v.User != nil {
		actor = "console:" + v.User.Name
	}
	c.log.Info("web "+action, "actor", actor, "target", target, "detail", detail)
	if c.opts.Audit == nil {
		return
	}
	err := c.opts.Audit.Record(context.WithoutCancel(ctx), state.AuditEntry{Actor: actor, Action: action, Target: target, Detail: detail})
	if err != nil {
		c.log.Error("web audit", "action", action, "target", target, "err", err)
	}
}
