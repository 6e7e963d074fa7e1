package console

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"slices"

	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/gateway/state"
)

// queueOps are the operations on a queued message, as the CLI has them
// (router.QueueOp).
var queueOps = []string{"retry", "hold", "release", "delete"}

func (c *Console) queueOp(w http.ResponseWriter, r *http.Request, v view) {
	op, id := r.PathValue("op"), r.PathValue("id")
	if !slices.Contains(queueOps, op) {
		c.fail(w, r, http.StatusNotFound, "No such operation.")
		return
	}
	err := c.opts.Admin.QueueOp(r.Context(), op, id)
	switch {
	case errors.Is(err, router.ErrNotFound), errors.Is(err, fs.ErrNotExist):
		c.fail(w, r, http.StatusNotFound, "No such message in the queue.")
		return
	case err != nil:
		c.log.Error("web queue", "op", op, "id", id, "err", err)
		c.fail(w, r, http.StatusInternalServerError, "The operation failed; the log says why.")
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
