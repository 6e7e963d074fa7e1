package gateway

import (
	"context"
	"io"
	"time"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state/trace"
)

// adminBackend is the gateway as the admin API sees it.
type adminBackend struct{ g *Gateway }

func (b adminBackend) Queue() ([]*spool.Envelope, error) { return b.g.spool.List() }

func (b adminBackend) QueuedMessage(id string) (*spool.Envelope, error) { return b.g.spool.Load(id) }

func (b adminBackend) QueueOp(ctx context.Context, op, id string) error {
	return b.g.router.QueueOp(ctx, op, id)
}

func (b adminBackend) Quarantined(ctx context.Context, f quarantine.Filter) ([]*quarantine.Record, error) {
	return b.g.quar.List(ctx, f, time.Now())
}

func (b adminBackend) QuarantineRecord(ctx context.Context, id string) (*quarantine.Record, error) {
	return b.g.quar.Get(ctx, id)
}

func (b adminBackend) QuarantineMessage(ctx context.Context, id string) (io.ReadCloser, error) {
	return b.g.quar.Message(ctx, id)
}

// QuarantineRelease queues a copy of a quarantined message for rcpts (all
// when none), exactly once, and hands it to the router.
func (b adminBackend) QuarantineRelease(ctx context.Context, id string, rcpts []string) (string, error) {
	g := b.g
	env, err := g.quar.Release(ctx, id, g.spool, rcpts...)
	if env == nil {
		return "", err
	}
	// Queued, even if the record lags (err != nil): deliver it.
	g.router.Enqueue(env)
	to := make([]string, len(env.Rcpts))
	for i, r := range env.Rcpts {
		to[i] = r.Addr
	}
	g.log.Info("quarantine released", "id", id, "queue_id", env.ID, "from", env.From, "rcpts", to, "message_id", env.MessageID)
	g.trace.Record(trace.Event{QueueID: id, MessageID: env.MessageID, Event: "released", Rcpts: to, Reason: "operator", Related: env.ID})
	g.trace.Record(trace.Event{QueueID: env.ID, MessageID: env.MessageID, Event: "queued", Reason: "released from the quarantine", Related: id})
	return env.ID, err
}

func (b adminBackend) QuarantineDelete(ctx context.Context, id string) error {
	if err := b.g.quar.Delete(ctx, id); err != nil {
		return err
	}
	b.g.log.Info("quarantine deleted", "id", id)
	b.g.trace.Record(trace.Event{QueueID: id, Event: "deleted", Reason: "operator"})
	return nil
}

func (b adminBackend) Reload(ctx context.Context) error { return b.g.Reload(ctx) }

func (b adminBackend) Health() admin.Health { return b.g.Health() }
