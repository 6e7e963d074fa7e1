package proto

import (
	"testing"

	"github.com/mailgate/mailgate/stages"
)

func TestRoundTrips(t *testing.T) {
	for _, p := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail, stages.Rcpt, stages.Data} {
		if got, err := ToPhase(FromPhase(p)); err != nil || got != p {
			t.Errorf("phase %v: %v, %v", p, got, err)
		}
	}
	for _, ps := range []stages.Phase{0, stages.Data, stages.Mail | stages.Rcpt, stages.AllPhases} {
		if got, err := ToPhases(FromPhases(ps)); err != nil || got != ps {
			t.Errorf("phases %v: %v, %v", ps, got, err)
		}
	}
	for ns := range stages.Needs(16) {
		if got, err := ToNeeds(FromNeeds(ns)); err != nil || got != ns {
			t.Errorf("needs %b: %b, %v", ns, got, err)
		}
	}
	for a := stages.Continue; a <= stages.Accept; a++ {
		if got, err := ToAction(FromAction(a)); err != nil || got != a {
			t.Errorf("action %v: %v, %v", a, got, err)
		}
	}
	for o := stages.HeaderAdd; o <= stages.BodyReplace; o++ {
		if got, err := ToEditOp(FromEditOp(o)); err != nil || got != o {
			t.Errorf("edit %v: %v, %v", o, got, err)
		}
	}
	if s := ToStrings(FromStrings([]string{"a@x", "\xff"})); len(s) != 2 || s[1] != "\xff" {
		t.Errorf("strings %q", s)
	}
}

func TestRefusesUnknown(t *testing.T) {
	if _, err := ToPhase(Phase_PHASE_UNSPECIFIED); err == nil {
		t.Error("phase 0 accepted")
	}
	if _, err := ToPhases([]Phase{Phase_PHASE_DATA, 9}); err == nil {
		t.Error("phase 9 accepted")
	}
	if _, err := ToNeeds([]Need{0}); err == nil {
		t.Error("need 0 accepted")
	}
	if _, err := ToAction(Action_ACTION_UNSPECIFIED); err == nil {
		t.Error("action 0 accepted")
	}
	if _, err := ToAction(FromAction(stages.Action(42))); err == nil {
		t.Error("action 42 accepted")
	}
	if _, err := ToEditOp(10); err == nil {
		t.Error("edit 10 accepted")
	}
}
