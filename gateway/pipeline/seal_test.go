package pipeline

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// sealer is a sealing stage that records the message it sealed, as a
// signer hashes it, and adds its seal on top.
func sealer(name string, saw *[]string) *fake {
	return &fake{name: name, info: stages.Info{Kind: "sealer", Phases: stages.Data, Needs: stages.NeedHeader, Edits: true, Seals: true},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			var b strings.Builder
			tx.Header.WriteTo(&b)
			*saw = append(*saw, b.String())
			return stages.Verdict{Result: "sealed", Edits: []stages.Edit{{Op: stages.HeaderInsert, Name: "X-Seal", Value: name}}}, nil
		}}
}

// editor is an editing stage that changes the Subject.
func editor(name string) *fake {
	return &fake{name: name, info: stages.Info{Kind: "fake", Phases: stages.Data, Edits: true},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Edits: []stages.Edit{{Op: stages.HeaderChange, Name: "Subject", Value: "edited"}}}, nil
		}}
}

// TestSealsRunLast: a sealing stage configured first runs after the
// editing stage configured after it and after the policy's subject tag,
// so the header it sealed is the header that leaves, its own edit aside.
func TestSealsRunLast(t *testing.T) {
	var saw []string
	p := newPipeline(t, defaultPolicy, sealer("sign", &saw), editor("edit"), returns("spam", stages.Verdict{Score: 6}))
	tx := newTx()
	d := p.Begin().Run(context.Background(), stages.Data, tx, nil)
	if d.Action != stages.Tag {
		t.Fatalf("decision %s, want tag", d.Action)
	}
	if got := names(d.Trace); !slices.Equal(got, []string{"edit", "spam", "sign"}) {
		t.Errorf("trace %v, want the sealing stage last", got)
	}
	var out strings.Builder
	tx.Header.WriteTo(&out)
	want := "X-Seal: sign\r\n" + strings.Join(saw, "")
	if len(saw) != 1 || out.String() != want {
		t.Errorf("header that leaves:\n%q\nwant the sealed header under the seal:\n%q", out.String(), want)
	}
	if !strings.Contains(saw[0], "Subject: [SPAM] edited\r\n") {
		t.Errorf("sealed header %q lacks the edited and tagged subject", saw[0])
	}
}

// TestSealsRunAfterAccept: an Accept (an allow-list entry, here for the
// whole session from connect) skips the other stages but not the seal:
// accepted mail still leaves signed. A refused message is not sealed.
func TestSealsRunAfterAccept(t *testing.T) {
	pol := defaultPolicy
	pol.Allow = policy.List{ClientIPs: []string{"192.0.2.1"}}
	var saw []string
	other := counting("spam", stages.Verdict{})
	s := newPipeline(t, pol, other, sealer("sign", &saw)).Begin()
	tx := newTx()
	tx.Client.Addr = netip.MustParseAddr("192.0.2.1")
	for _, ph := range []stages.Phase{stages.Connect, stages.Data} {
		if d := s.Run(context.Background(), ph, tx, nil); d.Action != stages.Accept {
			t.Fatalf("%s: %s, want accept", ph, d.Action)
		}
	}
	if len(saw) != 1 || tx.Header.Get("X-Seal") != "sign" || len(other.called()) != 0 {
		t.Errorf("sealed %d times, X-Seal %q, other stage called %v; want one seal and no other stage",
			len(saw), tx.Header.Get("X-Seal"), other.called())
	}

	saw = nil
	tx = newTx()
	d := newPipeline(t, noThresholds, returns("av", stages.Verdict{Action: stages.Reject}), sealer("sign", &saw)).
		Begin().Run(context.Background(), stages.Data, tx, nil)
	if d.Action != stages.Reject || len(saw) != 0 || tx.Header.Get("X-Seal") != "" {
		t.Errorf("refused message: %s, sealed %d times; want reject, no seal", d.Action, len(saw))
	}
}

// TestBrokenSealDecides: a sealing stage that breaks gets its on_error,
// which decides over a weaker decision (here over an Accept).
func TestBrokenSealDecides(t *testing.T) {
	broken := &fake{name: "sign", info: stages.Info{Kind: "sealer", Phases: stages.Data, Edits: true, Seals: true},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{}, errors.New("key gone")
		}}
	p := newPipeline(t, noThresholds, returns("allow", stages.Verdict{Action: stages.Accept}), broken)
	d := p.Begin().Run(context.Background(), stages.Data, newTx(), nil)
	if d.Action != stages.TempFail || d.Stage != "sign" || d.Reply == nil || d.Reply.Code != 451 {
		t.Errorf("decision %s by %q reply %v; want tempfail 451 by sign", d.Action, d.Stage, d.Reply)
	}
}

// TestSealMustBeADataEdit: a seal is an edit of the whole message.
func TestSealMustBeADataEdit(t *testing.T) {
	for _, info := range []stages.Info{
		{Phases: stages.Data | stages.Mail, Edits: true, Seals: true},
		{Phases: stages.Data, Seals: true},
	} {
		_, err := New([]StageSpec{{Stage: &fake{name: "s", info: info}}}, noThresholds, Options{})
		if err == nil || !strings.Contains(err.Error(), "seals") {
			t.Errorf("%+v: error %v, want one about seals", info, err)
		}
	}
}
