package proto

import (
	"fmt"

	"github.com/mailgate/mailgate/stages"
)

// The enums of filter.proto reserve 0 for "unspecified", so a field a plugin
// forgot to set is told apart from the first real value. The functions below
// map them to and from the stages constants; the To* functions refuse
// values they do not know, so garbage from a plugin is an error, never a
// silently wrong verdict.

// FromPhase maps one stages phase to its enum value.
func FromPhase(p stages.Phase) Phase {
	for i := range 5 {
		if p == 1<<i {
			return Phase(i + 1)
		}
	}
	return Phase_PHASE_UNSPECIFIED
}

// ToPhase maps an enum value to one stages phase.
func ToPhase(p Phase) (stages.Phase, error) {
	if p < Phase_PHASE_CONNECT || p > Phase_PHASE_DATA {
		return 0, fmt.Errorf("unknown phase %d", p)
	}
	return 1 << (p - 1), nil
}

// FromPhases lists the phases of a bitmask.
func FromPhases(ps stages.Phase) []Phase {
	var out []Phase
	for i := range 5 {
		if ps&(1<<i) != 0 {
			out = append(out, Phase(i+1))
		}
	}
	return out
}

// ToPhases folds a list of phases into a bitmask.
func ToPhases(ps []Phase) (stages.Phase, error) {
	var out stages.Phase
	for _, p := range ps {
		v, err := ToPhase(p)
		if err != nil {
			return 0, err
		}
		out |= v
	}
	return out, nil
}

// FromNeeds lists the needs of a bitmask.
func FromNeeds(ns stages.Needs) []Need {
	var out []Need
	for i := range 4 {
		if ns&(1<<i) != 0 {
			out = append(out, Need(i+1))
		}
	}
	return out
}

// ToNeeds folds a list of needs into a bitmask.
func ToNeeds(ns []Need) (stages.Needs, error) {
	var out stages.Needs
	for _, n := range ns {
		if n < Need_NEED_ENVELOPE || n > Need_NEED_RESULTS {
			return 0, fmt.Errorf("unknown need %d", n)
		}
		out |= 1 << (n - 1)
	}
	return out, nil
}

// FromAction maps a stages action to its enum value.
func FromAction(a stages.Action) Action { return Action(a) + 1 }

// ToAction maps an enum value to a stages action.
func ToAction(a Action) (stages.Action, error) {
	if a < Action_ACTION_CONTINUE || a > Action_ACTION_ACCEPT {
		return 0, fmt.Errorf("unknown action %d", a)
	}
	return stages.Action(a - 1), nil
}

// FromResult is r as the protocol carries it.
func FromResult(r stages.Result) *Result {
	return &Result{Stage: r.Stage, Kind: r.Kind, Action: FromAction(r.Action), Score: r.Score,
		Result: []byte(r.Result), Reason: []byte(r.Reason), Errored: r.Errored}
}

// ToResult is the stages.Result r carries, or an error for an action
// that is not one.
func ToResult(r *Result) (stages.Result, error) {
	a, err := ToAction(r.GetAction())
	if err != nil {
		return stages.Result{}, err
	}
	return stages.Result{Stage: r.GetStage(), Kind: r.GetKind(), Action: a, Score: r.GetScore(),
		Result: string(r.GetResult()), Reason: string(r.GetReason()), Errored: r.GetErrored()}, nil
}

// FromEditOp maps a stages edit operation to its enum value; the numbers
// are the same on both sides.
func FromEditOp(o stages.EditOp) EditOp { return EditOp(o) }

// ToEditOp maps an enum value to a stages edit operation.
func ToEditOp(o EditOp) (stages.EditOp, error) {
	if o < EditOp_EDIT_OP_HEADER_ADD || o > EditOp_EDIT_OP_BODY_REPLACE {
		return 0, fmt.Errorf("unknown edit operation %d", o)
	}
	return stages.EditOp(o), nil
}

// ToStrings and FromStrings convert the repeated bytes fields (envelope
// recipients) to Go strings and back; a Go string holds any bytes.
func ToStrings(bs [][]byte) []string {
	if bs == nil {
		return nil
	}
	out := make([]string, len(bs))
	for i, b := range bs {
		out[i] = string(b)
	}
	return out
}

func FromStrings(ss []string) [][]byte {
	if ss == nil {
		return nil
	}
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}
