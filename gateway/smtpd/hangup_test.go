package smtpd

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/stages"
)

// blockingStage blocks at one phase until its context ends, and says how
// it ended: the error of its context, or nil when it gave up waiting.
type blockingStage struct {
	phase   stages.Phase
	started chan struct{}
	ended   chan error
}

func (b *blockingStage) Name() string { return "block" }
func (b *blockingStage) Info() stages.Info {
	return stages.Info{Kind: "test", Phases: stages.AllPhases}
}

func (b *blockingStage) Run(ctx context.Context, p stages.Phase, _ *stages.Transaction) (stages.Verdict, error) {
	if p != b.phase {
		return stages.Verdict{}, nil
	}
	b.started <- struct{}{}
	select {
	case <-ctx.Done():
		b.ended <- ctx.Err()
		return stages.Verdict{}, ctx.Err()
	case <-time.After(30 * time.Second):
		b.ended <- nil
		return stages.Verdict{}, nil
	}
}

// A client that hangs up while its checks run gets no reply: the stage
// calls of every phase are cancelled soon after, not left to run out
// filter_timeout, and a message whose data checks were cut is not queued.
func TestChecksStopWhenClientHangsUp(t *testing.T) {
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail, stages.Rcpt, stages.Data} {
		st := &blockingStage{phase: ph, started: make(chan struct{}, 1), ended: make(chan error, 1)}
		ts := serveWith(t, "[server]\nfilter_timeout = \"5m\"\n", []pipeline.StageSpec{{Stage: st, Timeout: 5 * time.Minute}})
		c := connect(t, ts)
		if ph == stages.Connect || ph == stages.Helo {
			c.Send("EHLO client.test\r\n")
		} else {
			c.Cmd("EHLO client.test", "250")
		}
		if ph >= stages.Mail {
			c.Send("MAIL FROM:<a@sender.test>\r\n")
		}
		if ph >= stages.Rcpt {
			c.Expect("250")
			c.Send("RCPT TO:<b@dest.test>\r\n")
		}
		if ph == stages.Data {
			c.Expect("250")
			c.Cmd("DATA", "354")
			c.Send(msg + ".\r\n")
		}
		select {
		case <-st.started:
		case <-time.After(30 * time.Second):
			t.Fatalf("%s: the stage was not called", ph)
		}
		c.Conn.Close()
		if err := <-st.ended; !errors.Is(err, context.Canceled) {
			t.Errorf("%s: the stage's context ended with %v, want it cancelled when the client left", ph, err)
		}
		if ph == stages.Data {
			waitMessageFiles(t, ts, 0)
			if q := ts.queue.queued(); len(q) != 0 {
				t.Errorf("%d messages queued for a client that left before the reply", len(q))
			}
		}
	}
}
