package pipeline

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state/trace"
)

// Stages of a process group ([[stage]] process) share one plugin process,
// which runs a phase's calls to several of them in one round trip
// (host.Plugin.RunBatch) as runChain would run them one by one: group
// after group, each seeing the results before it, stopping after an
// Accept. The process is told how to read each verdict (the stage's
// result mappings under the transaction's policy, and its on_error), and
// reports the results it passed on, which must be the pipeline's own
// reading of the answers; if they differ (a verdict the host refuses), or
// the batch cannot be sent, the stages are called one by one.

// batchLen returns how many stages at the front of run can go in one
// batch: whole groups (see groupLen) of stages that one process serves.
// An editing stage ends a batch only for a process that cannot apply its
// edits before the next group as runChain does (proto.Batch, data path
// version 1).
func batchLen(run []*stage) int {
	first, ok := run[0].Stage.(*host.Plugin)
	if !ok {
		return 0
	}
	inside := first.EditsInBatch()
	n := 0
	for n < len(run) && (inside || n == 0 || !run[n-1].info.Edits) {
		g := groupLen(run[n:])
		for _, sg := range run[n : n+g] {
			if !first.Batches(sg.Stage) {
				return n
			}
		}
		n += g
	}
	return n
}

// runBatch runs the stages of run, which batchLen chose, in one round
// trip and returns their outcomes as runGroup would have, group after
// group; nil if the stages are to be called one by one instead.
func (p *Pipeline) runBatch(ctx context.Context, ph stages.Phase, tx *stages.Transaction, run []*stage, prior []stages.Result, eff policy.Effective, log *slog.Logger) []outcome {
	steps := make([]host.Step, len(run))
	var limit time.Duration // the longest the batch may take
	for i, g := 0, 0; i < len(run); g++ {
		n := groupLen(run[i:])
		var longest time.Duration
		for j, sg := range run[i : i+n] {
			steps[i+j] = host.Step{Stage: sg.Stage.(*host.Plugin), Group: g, Timeout: sg.timeout,
				Broken: p.failed(sg, outcome{res: trace.Stage{Name: sg.name, Kind: sg.info.Kind}}, errBroken).result()}
			for _, word := range sg.info.Results {
				if a, _, ok := sg.mapResult(eff, word); ok {
					if steps[i+j].Results == nil {
						steps[i+j].Results = map[string]stages.Action{}
					}
					steps[i+j].Results[word] = a
				}
			}
			longest = max(longest, sg.timeout)
		}
		i, limit = i+n, limit+longest
	}
	// The plugin times each stage from when it reads the frame, later than
	// here: a margin lets it answer a stage's timeout itself, so that one
	// stage that hangs costs only its own answer, not its batch mates'.
	bctx, cancel := context.WithTimeout(ctx, limit+batchMargin(limit))
	defer cancel()
	btx := *tx
	btx.Results = prior
	start := time.Now()
	answers, err := steps[0].Stage.RunBatch(bctx, ph, &btx, steps)
	if errors.Is(err, host.ErrNotBatched) {
		log.Debug("stages called one by one", "phase", ph.String(), "reason", err)
		return nil
	}
	outs := make([]outcome, 0, len(run))
	// The edits go to a copy of tx until every answer is read as the
	// process read it: one refused on the way means the later steps saw
	// a message the pipeline would not have, so they are called again,
	// one by one, on tx as it was.
	etx := *tx
	for i, sg := range run {
		var o outcome
		switch {
		case err != nil: // the batch failed: each stage broke with it
			cause := err
			if ctx.Err() == nil && bctx.Err() != nil {
				cause = sg.timeoutErr
			}
			o, _ = p.finish(ph, sg, stages.Verdict{}, cause, time.Since(start), eff)
		case i >= len(answers):
			return nil // the process stopped before the pipeline would
		default:
			a := answers[i]
			if errors.Is(a.Err, context.DeadlineExceeded) {
				a.Err = sg.timeoutErr
			}
			var edits []stages.Edit
			if o, edits = p.finish(ph, sg, a.Verdict, a.Err, a.Took, eff); o.result() != a.Result {
				log.Warn("a batch's answer read otherwise; stages called one by one", "stage", sg.name, "phase", ph.String())
				return nil
			}
			// Edits refused break the stage (applyEdits): the last step
			// broke as it would have alone; one before it means the
			// steps after it saw edits the pipeline refused. (A step
			// that broke otherwise, its verdict refused included, had no
			// edits applied in the process either: proto.Batch.)
			if o = p.applyEdits(sg, &etx, o, edits); o.broke && len(edits) > 0 && i < len(answers)-1 {
				log.Warn("a batch's edits refused before its last step; stages called one by one", "stage", sg.name, "phase", ph.String())
				return nil
			}
		}
		outs = append(outs, o)
		if o.res.Action == stages.Accept {
			break // as runGroup cuts a group, and runChain the chain
		}
	}
	if err == nil && len(outs) != len(answers) {
		return nil // the process went on where the pipeline stops
	}
	*tx = etx
	return outs
}

// errBroken stands for the error of a stage in the result the stages
// after it see when it breaks; only its on_error shows there.
var errBroken = errors.New("stage broke")

// batchMargin is how much longer than its stages' timeouts a batch may
// take: the frame's trip to the plugin and back.
func batchMargin(limit time.Duration) time.Duration {
	return max(limit/10, 500*time.Millisecond)
}
