package host

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// Step is one stage's call in a batch (RunBatch): how the pipeline runs
// it, so that the process can run the batch as the pipeline would.
type Step struct {
	Stage *Plugin
	// Group numbers the steps that run concurrently; a group sees the
	// results of the groups before it. Steps of a group are adjacent.
	Group   int
	Timeout time.Duration // the stage's own; 0: none
	// Broken is the result the later steps see if the call fails (the
	// stage's on_error), Results the result words the pipeline maps to
	// another action than the stage's own.
	Broken  stages.Result
	Results map[string]stages.Action
}

// Answer is one step's outcome, as Run would have returned it, with the
// time the call took and the result the steps after it saw.
type Answer struct {
	Verdict stages.Verdict
	Err     error
	Took    time.Duration
	Result  stages.Result
}

// ErrNotBatched is RunBatch refusing a batch it cannot send as one: a
// stage of it not admitted (its circuit open, the process down), a body
// that would have to be streamed, a process without the data path. The
// caller calls the stages one by one instead, which report why.
var ErrNotBatched = errors.New("plugin: calls not batched")

// Batches reports whether other is served by the same process as p (a
// process group), so that their calls of a phase may go in one RunBatch.
func (p *Plugin) Batches(other stages.Stage) bool {
	o, ok := other.(*Plugin)
	return ok && o.p == p.p && p.p.group
}

// EditsInBatch reports whether p's process applies a step's edits before
// the steps after it in a batch (data path version 2), so that a batch
// may go on past an editing stage.
func (p *Plugin) EditsInBatch() bool {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	return p.p.cur != nil && p.p.cur.dataVer >= proto.DataPathEditsInBatch
}

// RunBatch sends the calls of steps, stages that all Batches p, in one
// round trip, and returns the answers of the steps that ran, in order: all
// of them, or those up to a step whose result is an accept (the process
// runs the steps as the pipeline does: see proto.Batch). tx.Results are
// the results of the phases and stages before the batch. Each stage's
// circuit counts its own answer. It returns by the time ctx ends.
func (p *Plugin) RunBatch(ctx context.Context, phase stages.Phase, tx *stages.Transaction, steps []Step) ([]Answer, error) {
	var needs stages.Needs
	for _, st := range steps {
		needs |= st.Stage.info.Needs
	}
	req, err := request(phase, tx, needs)
	if err != nil {
		return nil, err
	}
	if _, streamed := req.GetBody().GetSource().(*proto.Body_Streamed); streamed {
		return nil, ErrNotBatched
	}
	b := &proto.Batch{Request: req}
	for _, st := range steps {
		ps := &proto.Step{Stage: st.Stage.name, Group: uint32(st.Group), TimeoutNs: int64(st.Timeout), Broken: proto.FromResult(st.Broken)}
		for word, a := range st.Results {
			if ps.Results == nil {
				ps.Results = map[string]proto.Action{}
			}
			ps.Results[word] = proto.FromAction(a)
		}
		b.Steps = append(b.Steps, ps)
	}

	// Every stage must be admitted, as for a call of its own.
	pr, probes, err := p.admitAll(steps, editsInside(steps))
	if err != nil {
		return nil, err
	}
	resp, err := pr.data.batch(ctx, b)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("run: %w", ctx.Err())
		} else if !errors.Is(err, errLost) {
			err = runError(err)
		}
		for i, st := range steps {
			st.Stage.record(pr, probes[i], ctx, err)
		}
		return nil, err
	}
	answers := resp.GetAnswers()
	if len(answers) > len(steps) {
		answers = answers[:len(steps)]
	}
	out := make([]Answer, len(answers))
	for i, a := range answers {
		st := steps[i].Stage
		out[i] = Answer{Took: time.Duration(a.GetDurationNs())}
		if out[i].Result, err = proto.ToResult(a.GetResult()); err != nil {
			out[i].Result = steps[i].Broken
		}
		if e := a.GetError(); e != nil {
			out[i].Err = runError(errorStatus(e))
		} else if out[i].Verdict, err = toVerdict(a.GetResponse().GetVerdict(), st.info.Edits); err != nil {
			out[i].Err = fmt.Errorf("plugin answered garbage: %w", err)
		}
		st.record(pr, probes[i], ctx, out[i].Err)
		if out[i].Err != nil {
			out[i].Err = fmt.Errorf("stage %q: %w", st.name, out[i].Err)
		}
	}
	for i := len(answers); i < len(steps); i++ {
		steps[i].Stage.unprobe(probes[i]) // not run: no outcome to count, but a probe ends
	}
	return out, nil
}

// editsInside reports whether a step follows the step of an editing
// stage: the process must then apply edits within the batch.
func editsInside(steps []Step) bool {
	for _, st := range steps[:max(len(steps)-1, 0)] {
		if st.Stage.info.Edits {
			return true
		}
	}
	return false
}

// admitAll admits the call of every step's stage to their process, or
// none, and returns the process and which calls are probes. edits says
// the process must apply edits within the batch (editsInside).
func (p *Plugin) admitAll(steps []Step, edits bool) (*proc, []bool, error) {
	p.p.mu.Lock()
	defer p.p.mu.Unlock()
	probes := make([]bool, len(steps))
	var pr *proc
	for i, st := range steps {
		cur, probe, err := st.Stage.admitLocked()
		admitted := steps[:i]
		if err == nil {
			admitted = steps[:i+1]
			switch {
			case cur.data == nil:
				err = ErrNotBatched
			case edits && cur.dataVer < proto.DataPathEditsInBatch:
				err = fmt.Errorf("data path version %d applies no edits within a batch", cur.dataVer)
			}
		}
		if err != nil {
			for _, a := range admitted {
				a.Stage.probing = false
			}
			return nil, nil, fmt.Errorf("%w: stage %q: %w", ErrNotBatched, st.Stage.name, err)
		}
		pr, probes[i] = cur, probe
	}
	return pr, probes, nil
}
