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
// reading of the answers; if they differ (a verdict the host refuses),
// the stages after that step are called one by one, and if the batch
// cannot be sent, all of them.

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
// group. A batch cut short (the process stopped early, read an answer
// otherwise, or applied an edit the pipeline refuses) returns the
// outcomes the pipeline can keep, those of the steps before the later
// ones went wrong, and the caller calls the rest: a stage that ran is
// not run again, so its side effects (a rate limit's count, a greylist
// entry) happen once. Nil: the batch was not sent.
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
	// The edits go to a copy of tx, the message as the pipeline has it
	// after each step it keeps.
	etx := *tx
	defer func() { *tx = etx }()
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
			// The process stopped before the pipeline would (an edit it
			// could not apply): the rest are called on their own.
			log.Debug("a batch ended early; the stages after it called one by one", "stage", sg.name, "phase", ph.String())
			return outs
		default:
			a := answers[i]
			if errors.Is(a.Err, context.DeadlineExceeded) {
				a.Err = sg.timeoutErr
			}
			var edits []stages.Edit
			o, edits = p.finish(ph, sg, a.Verdict, a.Err, a.Took, eff)
			readOtherwise := o.result() != a.Result
			// Edits refused break the stage (applyEdits), as alone. (A
			// step that broke otherwise, its verdict refused included,
			// had no edits applied in the process either: proto.Batch.)
			o = p.applyEdits(sg, &etx, o, edits)
			// The steps after one read otherwise, or after edits the
			// pipeline refused, saw what the pipeline would not have
			// shown them: this step's outcome stands, theirs do not.
			refused := o.broke && len(edits) > 0
			if (readOtherwise || refused) && i < len(answers)-1 {
				log.Warn("a batch's answer read otherwise, or its edits refused, before its last step; the stages after it called one by one", "stage", sg.name, "phase", ph.String())
				return append(outs, o)
			}
		}
		outs = append(outs, o)
		if o.res.Action == stages.Accept {
			// As runGroup cuts a group, and runChain the chain; a
			// process that went on past it ran stages the pipeline
			// ignores.
			break
		}
	}
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
