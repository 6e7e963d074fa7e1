package server

import (
	"context"
	"errors"
	"slices"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// runBatch runs the steps of a batch (proto.Batch) as the host's pipeline
// would run those stages: group after group, the steps of a group
// concurrently, each stage given what it declared it needs, the results
// of the steps before its group and the message as their edits left it,
// and no group after one in which a step's result is an accept. An error
// is one of the whole batch (a request it cannot read); a step's failure
// is in its answer.
func (s *filterServer) runBatch(ctx context.Context, b *proto.Batch) (*proto.BatchResponse, error) {
	req := b.GetRequest()
	phase, err := proto.ToPhase(req.GetPhase())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	tx, err := transaction(req.GetTransaction())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if tx.Body, err = bodyOf(req); err != nil {
		return nil, err
	}
	steps := b.GetSteps()
	out := &proto.BatchResponse{Answers: make([]*proto.StepAnswer, 0, len(steps))}
	for len(steps) > 0 {
		n := 1
		for n < len(steps) && steps[n].GetGroup() == steps[0].GetGroup() {
			n++
		}
		got, edits := s.runGroup(ctx, phase, tx, steps[:n])
		for _, a := range got {
			r, err := proto.ToResult(a.GetResult())
			if err != nil {
				return nil, status.Errorf(codes.InvalidArgument, "result of stage %q: %v", a.GetResult().GetStage(), err)
			}
			tx.Results = append(tx.Results, r)
		}
		out.Answers = append(out.Answers, got...)
		if len(got) < n || got[n-1].GetResult().GetAction() == proto.Action_ACTION_ACCEPT {
			break
		}
		if !s.applyEdits(tx, steps[:n], edits) {
			break // the host calls the stages one by one
		}
		steps = steps[n:]
	}
	return out, nil
}

// applyEdits applies the edits the steps of a group asked for to tx, in
// order, as the host's pipeline does before the next group, and reports
// whether it could: edits from a stage that did not declare any, or that
// stages.ApplyEdits refuses, fail that stage on the host's side, so the
// batch ends there. An editing stage is alone in its group.
func (s *filterServer) applyEdits(tx *stages.Transaction, group []*proto.Step, edits [][]stages.Edit) bool {
	for i, e := range edits {
		if len(e) == 0 {
			continue
		}
		f, err := s.configured(group[i].GetStage())
		if err != nil || !f.Info().Edits || stages.ApplyEdits(tx, e) != nil {
			return false
		}
	}
	return true
}

// runGroup runs the steps of one group concurrently and returns their
// answers in order, up to the first whose result is an accept (the steps
// after it are cancelled and left out, as the pipeline leaves them), and
// the edits each answer's verdict asked for.
func (s *filterServer) runGroup(ctx context.Context, phase stages.Phase, tx *stages.Transaction, group []*proto.Step) ([]*proto.StepAnswer, [][]stages.Edit) {
	if len(group) == 1 {
		a, e := s.runStep(ctx, phase, tx, group[0])
		return []*proto.StepAnswer{a}, [][]stages.Edit{e}
	}
	answers := make([]*proto.StepAnswer, len(group))
	edits := make([][]stages.Edit, len(group))
	cancels := make([]context.CancelFunc, len(group))
	done := make(chan int, len(group))
	for i, st := range group {
		sctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		go func() {
			answers[i], edits[i] = s.runStep(sctx, phase, tx, st)
			done <- i
		}()
	}
	accepted := len(group)
	for range group {
		i := <-done
		if answers[i].GetResult().GetAction() == proto.Action_ACTION_ACCEPT && i < accepted {
			accepted = i
			for _, cancel := range cancels[i+1:] {
				cancel()
			}
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	if accepted < len(group) {
		return answers[:accepted+1], edits[:accepted+1]
	}
	return answers, edits
}

// runStep calls one step's stage with the part of tx it declared it
// needs and answers with the verdict or the error, and the result the
// steps after it see; and the verdict's edits. It answers by the step's
// timeout, as the host does for a call of its own, even if the filter
// does not return then: the steps after it must not wait for it.
func (s *filterServer) runStep(ctx context.Context, phase stages.Phase, tx *stages.Transaction, st *proto.Step) (*proto.StepAnswer, []stages.Edit) {
	start := time.Now()
	a := &proto.StepAnswer{}
	f, err := s.configured(st.GetStage())
	var resp *proto.RunResponse
	var edits []stages.Edit
	if err == nil {
		if t := st.GetTimeoutNs(); t > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, time.Duration(t))
			defer cancel()
		}
		type answer struct {
			resp  *proto.RunResponse
			edits []stages.Edit
			err   error
		}
		done := make(chan answer, 1) // the filter may answer after nobody waits
		stx := needed(tx, f.Info().Needs)
		s.workers.spawn(func() {
			resp, edits, err := s.runFilter(ctx, f, phase, stx)
			done <- answer{resp, edits, err}
		})
		select {
		case an := <-done:
			resp, edits, err = an.resp, an.edits, an.err
		case <-ctx.Done():
			code := codes.Canceled
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				code = codes.DeadlineExceeded
			}
			err = status.Error(code, ctx.Err().Error())
		}
	}
	a.DurationNs = int64(time.Since(start))
	if err != nil {
		e, _ := status.FromError(err)
		a.Outcome = &proto.StepAnswer_Error{Error: &proto.CallError{Code: uint32(e.Code()), Message: e.Message()}}
		a.Result = st.GetBroken() // the stage's on_error, as the host sent it
		return a, nil
	}
	a.Outcome = &proto.StepAnswer_Response{Response: resp}
	a.Result = resultOf(st, f.Info().Kind, resp.GetVerdict())
	if a.Result.GetErrored() {
		return a, nil // a verdict the host refuses: the stage broke, its edits with it
	}
	return a, edits
}

// resultOf is the result the steps after st see of verdict v: its result
// word mapped to an action, if the host mapped it.
func resultOf(st *proto.Step, kind string, v *proto.Verdict) *proto.Result {
	action := v.GetAction()
	if _, err := proto.ToAction(action); err != nil {
		return st.GetBroken() // the host refuses such a verdict: the stage broke
	}
	if a, ok := st.GetResults()[string(v.GetResult())]; ok && len(v.GetResult()) > 0 {
		action = a
	}
	return &proto.Result{Stage: st.GetStage(), Kind: kind, Action: action, Score: v.GetScore(),
		Result: v.GetResult(), Reason: v.GetReason()}
}

// needed is tx with no more than a stage that needs n is given: as the
// host's request for a Run of its own would carry (plugins/host).
func needed(tx *stages.Transaction, n stages.Needs) *stages.Transaction {
	stx := *tx
	if n&(stages.NeedHeader|stages.NeedBody) == 0 {
		stx.Header = nil
	}
	if n&stages.NeedBody == 0 {
		stx.Body = nil
	}
	stx.Results = nil
	if n&stages.NeedResults != 0 {
		stx.Results = slices.Clone(tx.Results)
	}
	return &stx
}
