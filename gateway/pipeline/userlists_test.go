package pipeline

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
)

// memLists are users' lists in memory, as state.Lists returns them.
type memLists map[string][]state.ListEntry

func (m memLists) Entries(_ context.Context, owner string) ([]state.ListEntry, error) {
	return m[owner], nil
}

// TestUserLists: a recipient's block entry refuses that recipient; an
// allow entry delivers what the score thresholds would quarantine or tag,
// not what a stage quarantined, tagged or rejected by its own action; recipients who allow and who do not are split.
func TestUserLists(t *testing.T) {
	lists := memLists{
		"bob@example.test":   {{Owner: "bob@example.test", Kind: state.Allow, Sender: "example.org"}},
		"carol@example.test": {{Owner: "carol@example.test", Kind: state.Block, Sender: "sender@example.org"}},
		"dave@example.test":  {{Owner: "dave@example.test", Kind: state.Allow, Sender: "sender@example.org"}},
	}
	newP := func(v stages.Verdict) *Pipeline {
		p, err := New([]StageSpec{{Stage: returns("spam", v), Timeout: 5 * time.Second}}, defaultPolicy,
			Options{Metrics: NewMetrics(prometheus.NewRegistry()), UserLists: lists})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	run := func(p *Pipeline, rcpts ...string) ([]Decision, Decision, *stages.Transaction) {
		s := p.Begin().Fork()
		tx := newTx()
		tx.Rcpts = nil
		var ds []Decision
		for _, r := range rcpts {
			ds = append(ds, addRcpt(s, tx, r))
		}
		return ds, s.Run(context.Background(), stages.Data, tx, nil), tx
	}

	// carol blocks the sender: refused at RCPT.
	ds, _, _ := run(newP(stages.Verdict{}), "carol@example.test")
	if d := ds[0]; d.Action != stages.Reject || d.Stage != "policy.user_block" || replyText(d) != "550 5.7.1 Message rejected" {
		t.Fatalf("blocked: %s by %s %q", d.Action, d.Stage, replyText(d))
	}
	// bob allows example.org: spam delivered untagged.
	_, d, tx := run(newP(stages.Verdict{Score: 12, Result: "spam"}), "bob@example.test")
	if d.Action != stages.Continue || d.Stage != "policy.user_allow" || !strings.Contains(d.Reason, "bob@example.test allows example.org") {
		t.Fatalf("allowed spam: %s by %s (%s)", d.Action, d.Stage, d.Reason)
	}
	if tx.Header.Get("Subject") != "hello" {
		t.Errorf("subject %q: an allowed message is not tagged", tx.Header.Get("Subject"))
	}
	if last := d.Trace[len(d.Trace)-1]; last.Name != "policy.user_allow" || last.Kind != "policy" {
		t.Errorf("trace %v lacks policy.user_allow", names(d.Trace))
	}
	// ... but a virus is still refused.
	_, d, _ = run(newP(stages.Verdict{Action: stages.Reject, Result: "infected"}), "bob@example.test")
	if d.Action != stages.Reject {
		t.Fatalf("allowed virus: %s, want reject", d.Action)
	}
	// ... and what a stage quarantined or tagged by its own action, not by
	// score (a virus, a forbidden file type, DMARC p=quarantine), stays:
	// a forged MAIL FROM of an allowed sender must not deliver a virus.
	for _, a := range []stages.Action{stages.Quarantine, stages.Tag} {
		_, d, _ = run(newP(stages.Verdict{Action: a, Result: "infected"}), "bob@example.test")
		if d.Action != a || d.Stage != "spam" || d.ByScore {
			t.Errorf("allowed sender, a stage's %s: %s by %s, want %[1]s by spam", a, d.Action, d.Stage)
		}
	}
	// A stage's tag stands under an allowed quarantine by score.
	_, d, _ = run(newP(stages.Verdict{Action: stages.Tag, Score: 12, Result: "bulk"}), "bob@example.test")
	if d.Action != stages.Tag || d.Stage != "spam" {
		t.Errorf("allowed sender, a stage's tag and a quarantine by score: %s by %s, want tag by spam", d.Action, d.Stage)
	}
	// Two who allow go together; one who does not is split off, both ways.
	ds, d, _ = run(newP(stages.Verdict{Score: 12}), "bob@example.test", "dave@example.test", "user@example.test")
	if ds[1].Action != stages.Continue || ds[2].Action != stages.TempFail || replyText(ds[2]) != "452 4.5.3 Recipients with different policies, send separately" {
		t.Fatalf("split: %s, %s %q", ds[1].Action, ds[2].Action, replyText(ds[2]))
	}
	if d.Action != stages.Continue {
		t.Errorf("bob and dave: %s, want continue", d.Action)
	}
	ds, d, _ = run(newP(stages.Verdict{Score: 12}), "user@example.test", "bob@example.test")
	if ds[1].Action != stages.TempFail || d.Action != stages.Quarantine || !d.ByScore {
		t.Fatalf("user then bob: %s, data %s; want bob deferred, the message quarantined", ds[1].Action, d.Action)
	}
}
