package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state/trace"
)

// fake is an in-process stage whose behaviour a test sets.
type fake struct {
	name string
	info stages.Info
	run  func(ctx context.Context, ph stages.Phase, tx *stages.Transaction) (stages.Verdict, error)

	mu    sync.Mutex
	calls []stages.Phase
}

func (f *fake) Name() string      { return f.name }
func (f *fake) Info() stages.Info { return f.info }

func (f *fake) Run(ctx context.Context, ph stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	f.mu.Lock()
	f.calls = append(f.calls, ph)
	f.mu.Unlock()
	if f.run == nil {
		return stages.Verdict{}, nil
	}
	return f.run(ctx, ph, tx)
}

func (f *fake) called() []stages.Phase {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// returns makes a data-phase stage that answers v.
func returns(name string, v stages.Verdict) *fake {
	return &fake{name: name, info: stages.Info{Kind: "fake", Phases: stages.Data},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) { return v, nil }}
}

// noThresholds is a policy whose scores never decide.
var noThresholds = policy.Policy{}

var defaultPolicy = policy.Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15, SubjectTag: "[SPAM]"}

func newPipeline(t testing.TB, pol policy.Policy, fs ...*fake) *Pipeline {
	t.Helper()
	specs := make([]StageSpec, len(fs))
	for i, f := range fs {
		specs[i] = StageSpec{Stage: f, Timeout: 5 * time.Second}
	}
	return newPipelineSpecs(t, pol, specs...)
}

func newPipelineSpecs(t testing.TB, pol policy.Policy, specs ...StageSpec) *Pipeline {
	t.Helper()
	p, err := New(specs, pol, Options{Metrics: NewMetrics(prometheus.NewRegistry())})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func newTx() *stages.Transaction {
	return &stages.Transaction{
		QueueID: "Q1",
		From:    "sender@example.org",
		Rcpts:   []string{"user@example.test"},
		Header:  stages.Header{{Name: "From", Value: "sender@example.org"}, {Name: "Subject", Value: "hello"}},
		Body:    stages.BytesBody("body\r\n"),
	}
}

func names(trace []trace.Stage) []string {
	var ns []string
	for _, r := range trace {
		ns = append(ns, r.Name)
	}
	return ns
}

func TestRunsOnlyDeclaredPhases(t *testing.T) {
	early := &fake{name: "early", info: stages.Info{Kind: "fake", Phases: stages.Connect | stages.Mail}}
	rcpt := &fake{name: "rcpt", info: stages.Info{Kind: "fake", Phases: stages.Rcpt}}
	data := &fake{name: "data", info: stages.Info{Kind: "fake", Phases: stages.Data}}
	p := newPipeline(t, noThresholds, early, rcpt, data)

	s := p.Begin()
	tx := newTx()
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail, stages.Rcpt, stages.Rcpt, stages.Data} {
		s.Run(context.Background(), ph, tx, nil)
	}
	for _, c := range []struct {
		f    *fake
		want []stages.Phase
	}{
		{early, []stages.Phase{stages.Connect, stages.Mail}},
		{rcpt, []stages.Phase{stages.Rcpt, stages.Rcpt}},
		{data, []stages.Phase{stages.Data}},
	} {
		if got := c.f.called(); !slices.Equal(got, c.want) {
			t.Errorf("%s called in %v, want %v", c.f.name, got, c.want)
		}
	}
}

func TestMergeOrder(t *testing.T) {
	custom := &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Spam detected"}
	v := func(a stages.Action) stages.Verdict { return stages.Verdict{Action: a} }
	for _, c := range []struct {
		name      string
		verdicts  []stages.Verdict
		want      stages.Action
		wantStage string
		wantReply string
	}{
		{"nothing", []stages.Verdict{v(stages.Continue), v(stages.Continue)}, stages.Continue, "", ""},
		{"tag", []stages.Verdict{v(stages.Continue), v(stages.Tag)}, stages.Tag, "s1", ""},
		{"quarantine over tag", []stages.Verdict{v(stages.Tag), v(stages.Quarantine)}, stages.Quarantine, "s1", ""},
		{"tempfail over quarantine", []stages.Verdict{v(stages.Quarantine), v(stages.TempFail), v(stages.Tag)}, stages.TempFail, "s1", "451 4.7.1 Try again later"},
		{"reject over tempfail", []stages.Verdict{v(stages.TempFail), v(stages.Reject), v(stages.Quarantine)}, stages.Reject, "s1", "550 5.7.1 Message rejected"},
		{"first of equals", []stages.Verdict{v(stages.Reject), v(stages.Reject)}, stages.Reject, "s0", "550 5.7.1 Message rejected"},
		{"stage reply kept", []stages.Verdict{{Action: stages.Reject, Reply: custom}}, stages.Reject, "s0", "554 5.7.1 Spam detected"},
		{"wrong class reply replaced", []stages.Verdict{{Action: stages.Reject, Reply: &stages.Reply{Code: 250, Text: "Ok"}}}, stages.Reject, "s0", "550 5.7.1 Message rejected"},
		{"reply with line break replaced", []stages.Verdict{{Action: stages.TempFail, Reply: &stages.Reply{Code: 451, Text: "a\r\n250 ok"}}}, stages.TempFail, "s0", "451 4.7.1 Try again later"},
		{"accept after reject", []stages.Verdict{v(stages.Reject), v(stages.Accept)}, stages.Reject, "s0", "550 5.7.1 Message rejected"},
		{"accept over tag", []stages.Verdict{v(stages.Tag), v(stages.Accept)}, stages.Accept, "s1", ""},
		{"accept first", []stages.Verdict{v(stages.Accept), v(stages.Reject)}, stages.Accept, "s0", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fs []*fake
			for i, vd := range c.verdicts {
				fs = append(fs, returns("s"+string(rune('0'+i)), vd))
			}
			d := newPipeline(t, noThresholds, fs...).Begin().Run(context.Background(), stages.Data, newTx(), nil)
			if d.Action != c.want || d.Stage != c.wantStage {
				t.Errorf("got %s by %q, want %s by %q", d.Action, d.Stage, c.want, c.wantStage)
			}
			reply := ""
			if d.Reply != nil {
				reply = d.Reply.String()
			}
			if reply != c.wantReply {
				t.Errorf("reply %q, want %q", reply, c.wantReply)
			}
		})
	}
}

func TestThresholds(t *testing.T) {
	for _, c := range []struct {
		name      string
		verdicts  []stages.Verdict
		want      stages.Action
		wantStage string
	}{
		{"below tag", []stages.Verdict{{Score: 2}, {Score: 2.9}}, stages.Continue, ""},
		// A threshold names the stage that added most of the score.
		{"tag", []stages.Verdict{{Score: 2}, {Score: 3}}, stages.Tag, "s1"},
		{"quarantine", []stages.Verdict{{Score: 6}, {Score: 4}}, stages.Quarantine, "s0"},
		{"reject", []stages.Verdict{{Score: 10}, {Score: 5}}, stages.Reject, "s0"},
		{"negative score offsets", []stages.Verdict{{Score: 12}, {Score: -8}}, stages.Continue, ""},
		{"verdict stronger than score", []stages.Verdict{{Score: 6}, {Action: stages.Reject}}, stages.Reject, "s1"},
		{"score stronger than verdict", []stages.Verdict{{Action: stages.Tag, Score: 16}}, stages.Reject, "s0"},
		{"tie goes to the stage", []stages.Verdict{{Action: stages.Quarantine, Score: 11}}, stages.Quarantine, "s0"},
		{"accept escapes thresholds", []stages.Verdict{{Score: 20}, {Action: stages.Accept}}, stages.Accept, "s1"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var fs []*fake
			total := 0.0
			for i, vd := range c.verdicts {
				fs = append(fs, returns("s"+string(rune('0'+i)), vd))
				total += vd.Score
			}
			d := newPipeline(t, defaultPolicy, fs...).Begin().Run(context.Background(), stages.Data, newTx(), nil)
			if d.Action != c.want || d.Stage != c.wantStage {
				t.Errorf("got %s by %q (%s), want %s by %q", d.Action, d.Stage, d.Reason, c.want, c.wantStage)
			}
			if d.Score != total {
				t.Errorf("score %g, want %g", d.Score, total)
			}
		})
	}
}

func TestScoreAcrossPhases(t *testing.T) {
	dnsbl := &fake{name: "dnsbl", info: stages.Info{Kind: "dnsbl", Phases: stages.Connect},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Score: 4, Result: "listed"}, nil
		}}
	spf := &fake{name: "spf", info: stages.Info{Kind: "spf", Phases: stages.Mail},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Score: 3, Result: "softfail"}, nil
		}}
	users := &fake{name: "users", info: stages.Info{Kind: "users", Phases: stages.Rcpt},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			if tx.Rcpts[len(tx.Rcpts)-1] == "nobody@example.test" {
				return stages.Verdict{Action: stages.Reject, Score: 100}, nil
			}
			return stages.Verdict{}, nil
		}}
	spam := &fake{name: "spam", info: stages.Info{Kind: "spam", Phases: stages.Data},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Score: 4}, nil
		}}
	p := newPipeline(t, defaultPolicy, dnsbl, spf, users, spam)
	ctx := context.Background()

	base := p.Begin()
	tx := newTx()
	if d := base.Run(ctx, stages.Connect, tx, nil); d.Action != stages.Continue || d.Score != 4 {
		t.Fatalf("connect: %s %g", d.Action, d.Score)
	}

	// First transaction: a refused recipient adds nothing; 4+3+4 = 11.
	s := base.Fork()
	if d := s.Run(ctx, stages.Mail, tx, nil); d.Action != stages.Tag || d.Score != 7 {
		t.Fatalf("mail: %s %g, want tag 7", d.Action, d.Score)
	}
	tx.Rcpts = []string{"nobody@example.test"}
	if d := s.Run(ctx, stages.Rcpt, tx, nil); d.Action != stages.Reject || d.Stage != "users" {
		t.Fatalf("rcpt nobody: %s by %q", d.Action, d.Stage)
	}
	tx.Rcpts = []string{"user@example.test"}
	if d := s.Run(ctx, stages.Rcpt, tx, nil); d.Action != stages.Tag || d.Score != 7 {
		t.Fatalf("rcpt user: %s %g, want tag 7", d.Action, d.Score)
	}
	if d := s.Run(ctx, stages.Data, tx, nil); d.Action != stages.Quarantine || d.Score != 11 {
		t.Fatalf("data: %s %g, want quarantine 11", d.Action, d.Score)
	}

	// A second transaction starts from the connect phase only: 4+4 = 8.
	s2 := base.Fork()
	if d := s2.Run(ctx, stages.Data, newTx(), nil); d.Action != stages.Tag || d.Score != 8 {
		t.Fatalf("second transaction data: %s %g, want tag 8", d.Action, d.Score)
	}
}

func TestCarriedQuarantine(t *testing.T) {
	bl := &fake{name: "bl", info: stages.Info{Kind: "dnsbl", Phases: stages.Connect},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Action: stages.Quarantine, Reason: "listed"}, nil
		}}
	p := newPipeline(t, noThresholds, bl, returns("spam", stages.Verdict{Action: stages.Tag}))
	s := p.Begin()
	s.Run(context.Background(), stages.Connect, newTx(), nil)
	d := s.Fork().Run(context.Background(), stages.Data, newTx(), nil)
	if d.Action != stages.Quarantine || d.Stage != "bl" || d.Reason != "listed" {
		t.Errorf("got %s by %q (%q), want quarantine by bl", d.Action, d.Stage, d.Reason)
	}
}

func TestAcceptShortCircuits(t *testing.T) {
	before := returns("before", stages.Verdict{Score: 3})
	allow := returns("allow", stages.Verdict{Action: stages.Accept, Reason: "allow-listed"})
	// In allow's group: cancelled, and left out even though it started.
	// Its timeout is an hour: ended soon, it was cancelled, not timed out.
	ended := make(chan error, 1)
	sameGroup := &fake{name: "same-group", info: stages.Info{Kind: "fake", Phases: stages.Data},
		run: func(ctx context.Context, _ stages.Phase, _ *stages.Transaction) (stages.Verdict, error) {
			<-ctx.Done()
			ended <- ctx.Err()
			return stages.Verdict{Action: stages.Reject}, ctx.Err()
		}}
	// In a later group: never called.
	later := &fake{name: "later", info: stages.Info{Kind: "fake", Phases: stages.Data, Edits: true}}
	var specs []StageSpec
	for _, f := range []*fake{before, allow, sameGroup, later} {
		specs = append(specs, StageSpec{Stage: f, Timeout: time.Hour})
	}
	p := newPipelineSpecs(t, defaultPolicy, specs...)

	d := runWithin(t, p.Begin(), stages.Data, newTx())
	if d.Action != stages.Accept || d.Stage != "allow" || d.Reason != "allow-listed" {
		t.Errorf("got %s by %q (%q), want accept by allow", d.Action, d.Stage, d.Reason)
	}
	if got := names(d.Trace); !slices.Equal(got, []string{"before", "allow"}) {
		t.Errorf("trace %v, want [before allow]", got)
	}
	if d.Score != 3 {
		t.Errorf("score %g, want 3", d.Score)
	}
	if len(later.called()) != 0 {
		t.Error("the stage after the accepting group was called")
	}
	select {
	case err := <-ended:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("the stage after allow in its group ended with %v, want it cancelled", err)
		}
	case <-time.After(waitLong):
		t.Error("the stage after allow in its group was not cancelled")
	}
}

// waitLong bounds a wait for what must happen long before a stage's
// timeout of an hour: an upper bound for a loaded machine, not a measure.
const waitLong = 30 * time.Second

// runWithin runs the phase ph of s, failing the test if Run does not
// return within waitLong: the tests that use it give their stages
// timeouts far longer, or stages that never return by themselves.
func runWithin(t *testing.T, s *Session, ph stages.Phase, tx *stages.Transaction) Decision {
	t.Helper()
	done := make(chan Decision, 1)
	go func() { done <- s.Run(context.Background(), ph, tx, nil) }()
	select {
	case d := <-done:
		return d
	case <-time.After(waitLong):
		t.Fatalf("Run still running after %v", waitLong)
		return Decision{}
	}
}

func TestAcceptHoldsForTheSession(t *testing.T) {
	allow := &fake{name: "allow", info: stages.Info{Kind: "fake", Phases: stages.Connect},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Action: stages.Accept}, nil
		}}
	spam := returns("spam", stages.Verdict{Action: stages.Reject})
	s := newPipeline(t, defaultPolicy, allow, spam).Begin()
	s.Run(context.Background(), stages.Connect, newTx(), nil)
	d := s.Fork().Run(context.Background(), stages.Data, newTx(), nil)
	if d.Action != stages.Accept || d.Stage != "allow" {
		t.Errorf("got %s by %q, want accept by allow", d.Action, d.Stage)
	}
	if len(spam.called()) != 0 {
		t.Error("a data stage ran after an accept at connect")
	}
}

func TestAcceptAtRcptIsPerRecipient(t *testing.T) {
	postmaster := &fake{name: "postmaster", info: stages.Info{Kind: "fake", Phases: stages.Rcpt},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Action: stages.Accept}, nil
		}}
	spam := returns("spam", stages.Verdict{Action: stages.Reject})
	s := newPipeline(t, defaultPolicy, postmaster, spam).Begin()
	if d := s.Run(context.Background(), stages.Rcpt, newTx(), nil); d.Action != stages.Accept {
		t.Fatalf("rcpt: %s, want accept", d.Action)
	}
	if d := s.Run(context.Background(), stages.Data, newTx(), nil); d.Action != stages.Reject {
		t.Errorf("data: %s, want reject: an accept at rcpt must not skip the data stages", d.Action)
	}
}

func TestTimeoutAppliesOnError(t *testing.T) {
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	slow := &fake{name: "slow", info: stages.Info{Kind: "clamav", Phases: stages.Data},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			// Ignores its context, as a stuck stage would, until the
			// test ends: only the timeout lets Run return.
			<-release
			return stages.Verdict{Action: stages.Reject}, nil
		}}
	p := newPipelineSpecs(t, defaultPolicy, StageSpec{Stage: slow, Timeout: 100 * time.Millisecond})
	d := runWithin(t, p.Begin(), stages.Data, newTx())
	if d.Action != stages.TempFail || d.Reply == nil || d.Reply.String() != "451 4.3.0 Temporary failure, try again later" {
		t.Errorf("got %s %v, want tempfail 451 4.3.0", d.Action, d.Reply)
	}
	r := d.Trace[0]
	if !strings.Contains(r.Error, "timed out after 100ms") {
		t.Errorf("trace %+v, want a timeout", r)
	}
}

func TestOnError(t *testing.T) {
	for _, c := range []struct {
		onErr     string
		want      stages.Action
		wantReply string
		nextRuns  bool
	}{
		{"tempfail", stages.TempFail, "451 4.3.0 Temporary failure, try again later", true},
		{"reject", stages.Reject, "550 5.7.1 Message rejected", true},
		{"accept", stages.Accept, "", false},
		{"quarantine", stages.Quarantine, "", true},
		{"skip", stages.Continue, "", true},
	} {
		t.Run(c.onErr, func(t *testing.T) {
			broken := &fake{name: "broken", info: stages.Info{Kind: "clamav", Phases: stages.Data},
				run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
					return stages.Verdict{Action: stages.Reject, Score: 50}, errors.New("dial clamd: connection refused")
				}}
			next := &fake{name: "next", info: stages.Info{Kind: "fake", Phases: stages.Data, Edits: true}}
			p := newPipelineSpecs(t, defaultPolicy,
				StageSpec{Stage: broken, OnError: c.onErr, Timeout: time.Second},
				StageSpec{Stage: next, Timeout: time.Second})
			d := p.Begin().Run(context.Background(), stages.Data, newTx(), nil)
			if d.Action != c.want {
				t.Errorf("action %s, want %s", d.Action, c.want)
			}
			reply := ""
			if d.Reply != nil {
				reply = d.Reply.String()
			}
			if reply != c.wantReply {
				t.Errorf("reply %q, want %q", reply, c.wantReply)
			}
			if d.Score != 0 {
				t.Errorf("score %g: a broken stage's score must not count", d.Score)
			}
			r := d.Trace[0]
			if r.Error != "dial clamd: connection refused" || r.Action != c.want {
				t.Errorf("trace %+v", r)
			}
			if ran := len(next.called()) > 0; ran != c.nextRuns {
				t.Errorf("next stage ran: %v, want %v", ran, c.nextRuns)
			}
		})
	}
}

func TestPanicIsRecovered(t *testing.T) {
	bad := &fake{name: "bad", info: stages.Info{Kind: "fake", Phases: stages.Data},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			var m map[string]int
			m["x"]++
			return stages.Verdict{}, nil
		}}
	p := newPipelineSpecs(t, defaultPolicy, StageSpec{Stage: bad, OnError: "skip", Timeout: time.Second})
	d := p.Begin().Run(context.Background(), stages.Data, newTx(), nil)
	if d.Action != stages.Continue || !strings.HasPrefix(d.Trace[0].Error, "panic: ") {
		t.Errorf("got %s, trace %+v; want the panic counted as an error and skipped", d.Action, d.Trace[0])
	}
}

func TestIndependentStagesOverlap(t *testing.T) {
	// Each stage waits until both have started: run one after the other,
	// the first would wait for its timeout and fail.
	var arrived sync.WaitGroup
	arrived.Add(2)
	both := make(chan struct{})
	go func() { arrived.Wait(); close(both) }()
	barrier := func(name string) *fake {
		return &fake{name: name, info: stages.Info{Kind: "fake", Phases: stages.Data},
			run: func(ctx context.Context, _ stages.Phase, _ *stages.Transaction) (stages.Verdict, error) {
				arrived.Done()
				select {
				case <-both:
					return stages.Verdict{Result: "met"}, nil
				case <-ctx.Done():
					return stages.Verdict{}, ctx.Err()
				}
			}}
	}
	p := newPipelineSpecs(t, noThresholds,
		StageSpec{Stage: barrier("a"), Timeout: 5 * time.Second},
		StageSpec{Stage: barrier("b"), Timeout: 5 * time.Second})
	d := p.Begin().Run(context.Background(), stages.Data, newTx(), nil)
	for _, r := range d.Trace {
		if r.Error != "" || r.Result != "met" {
			t.Errorf("stage %s: %+v; the stages did not run concurrently", r.Name, r)
		}
	}
	if got := names(d.Trace); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("trace %v, want chain order [a b]", got)
	}
}

func TestEditingStagesSeeEarlierEdits(t *testing.T) {
	first := &fake{name: "first", info: stages.Info{Kind: "headers", Phases: stages.Data, Edits: true},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Edits: []stages.Edit{{Op: stages.HeaderAdd, Name: "X-First", Value: "1"}}}, nil
		}}
	second := &fake{name: "second", info: stages.Info{Kind: "headers", Phases: stages.Data, Edits: true},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Edits: []stages.Edit{{Op: stages.HeaderAdd, Name: "X-Second", Value: "saw " + tx.Header.Get("X-First")}}}, nil
		}}
	var seen []string
	reader := &fake{name: "reader", info: stages.Info{Kind: "fake", Phases: stages.Data},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			seen = []string{tx.Header.Get("X-First"), tx.Header.Get("X-Second")}
			return stages.Verdict{}, nil
		}}
	tx := newTx()
	p := newPipeline(t, noThresholds, first, second, reader)
	p.Begin().Run(context.Background(), stages.Data, tx, nil)
	if !slices.Equal(seen, []string{"1", "saw 1"}) {
		t.Errorf("the stage after the editors saw %q", seen)
	}
	want := stages.Header{{Name: "From", Value: "sender@example.org"}, {Name: "Subject", Value: "hello"},
		{Name: "X-First", Value: "1"}, {Name: "X-Second", Value: "saw 1"}}
	if !slices.Equal(tx.Header, want) {
		t.Errorf("header %q, want %q", tx.Header, want)
	}
}

func TestResultsForStagesThatNeedThem(t *testing.T) {
	spf := &fake{name: "spf", info: stages.Info{Kind: "spf", Phases: stages.Mail},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Result: "softfail", Score: 1}, nil
		}}
	dnsbl := returns("dnsbl", stages.Verdict{Result: "listed", Score: 2})
	var spamSaw, plainSaw []stages.Result
	spam := &fake{name: "spam", info: stages.Info{Kind: "spam", Phases: stages.Data, Needs: stages.NeedResults},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			spamSaw = tx.Results
			return stages.Verdict{}, nil
		}}
	plain := &fake{name: "plain", info: stages.Info{Kind: "fake", Phases: stages.Data},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			plainSaw = tx.Results
			return stages.Verdict{}, nil
		}}
	s := newPipeline(t, noThresholds, spf, dnsbl, spam, plain).Begin()
	tx := newTx()
	s.Run(context.Background(), stages.Mail, tx, nil)
	s.Run(context.Background(), stages.Data, tx, nil)
	want := []stages.Result{
		{Stage: "spf", Kind: "spf", Result: "softfail", Score: 1},
		{Stage: "dnsbl", Kind: "fake", Result: "listed", Score: 2},
	}
	if !slices.Equal(spamSaw, want) {
		t.Errorf("spam saw %+v, want %+v", spamSaw, want)
	}
	if plainSaw != nil {
		t.Errorf("a stage without NeedResults got results %+v", plainSaw)
	}
	if tx.Results != nil {
		t.Errorf("the caller's transaction got results %+v", tx.Results)
	}
}

func TestBadEditIsAStageError(t *testing.T) {
	for _, c := range []struct {
		name  string
		info  stages.Info
		phase stages.Phase
		edits []stages.Edit
		want  string
	}{
		{"header injection", stages.Info{Phases: stages.Data, Edits: true}, stages.Data,
			[]stages.Edit{{Op: stages.HeaderAdd, Name: "X-Ok", Value: "fine"}, {Op: stages.HeaderAdd, Name: "X-Bad", Value: "a\r\nBcc: victim@example.org"}},
			"line break that is not a fold"},
		{"bare LF", stages.Info{Phases: stages.Data, Edits: true}, stages.Data,
			[]stages.Edit{{Op: stages.HeaderAdd, Name: "X-Bad", Value: "a\nb"}}, "control character"},
		{"undeclared edits", stages.Info{Phases: stages.Data}, stages.Data,
			[]stages.Edit{{Op: stages.HeaderAdd, Name: "X-Ok", Value: "fine"}}, "does not declare edits"},
		{"edits before data", stages.Info{Phases: stages.Mail, Edits: true}, stages.Mail,
			[]stages.Edit{{Op: stages.SenderChange, Value: "x@example.org"}}, "edits apply at data only"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := &fake{name: "editor", info: c.info,
				run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
					return stages.Verdict{Action: stages.Tag, Edits: c.edits}, nil
				}}
			p := newPipelineSpecs(t, noThresholds, StageSpec{Stage: f, OnError: "reject", Timeout: time.Second})
			tx := newTx()
			d := p.Begin().Run(context.Background(), c.phase, tx, nil)
			if d.Action != stages.Reject || !strings.Contains(d.Trace[0].Error, c.want) {
				t.Errorf("got %s, trace %+v; want on_error reject with %q", d.Action, d.Trace[0], c.want)
			}
			if !slices.Equal(tx.Header, newTx().Header) || tx.From != newTx().From {
				t.Errorf("transaction changed by a refused edit: %q %q", tx.Header, tx.From)
			}
		})
	}
}

func TestBodyReplaced(t *testing.T) {
	f := &fake{name: "disclaimer", info: stages.Info{Kind: "milter", Phases: stages.Data, Edits: true},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Edits: []stages.Edit{{Op: stages.BodyReplace, Body: []byte("new\nbody\r\n")}}}, nil
		}}
	tx := newTx()
	d := newPipeline(t, noThresholds, f).Begin().Run(context.Background(), stages.Data, tx, nil)
	if !d.BodyReplaced {
		t.Error("BodyReplaced not set")
	}
	if b, ok := tx.Body.(stages.BytesBody); !ok || string(b) != "new\r\nbody\r\n" {
		t.Errorf("body %T %q", tx.Body, tx.Body)
	}
}

func TestSubjectTagOnTag(t *testing.T) {
	for _, c := range []struct {
		score float64
		want  string
	}{
		{6, "[SPAM] hello"}, // tag
		{11, "hello"},       // quarantine: kept as it is
		{1, "hello"},        // continue
	} {
		tx := newTx()
		p := newPipeline(t, defaultPolicy, returns("spam", stages.Verdict{Score: c.score}))
		p.Begin().Run(context.Background(), stages.Data, tx, nil)
		if got := tx.Header.Get("Subject"); got != c.want {
			t.Errorf("score %g: subject %q, want %q", c.score, got, c.want)
		}
	}
}

func TestMetrics(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	build := func() *Pipeline {
		ok := &fake{name: "spf", info: stages.Info{Kind: "spf", Phases: stages.Mail | stages.Data},
			run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
				return stages.Verdict{Action: stages.Tag}, nil
			}}
		broken := &fake{name: "clamav", info: stages.Info{Kind: "clamav", Phases: stages.Data},
			run: func(ctx context.Context, _ stages.Phase, _ *stages.Transaction) (stages.Verdict, error) {
				<-ctx.Done()
				return stages.Verdict{}, ctx.Err()
			}}
		p, err := New([]StageSpec{
			{Stage: ok, Timeout: time.Second},
			{Stage: broken, OnError: "skip", Timeout: 10 * time.Millisecond},
		}, noThresholds, Options{Metrics: m})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	s := build().Begin()
	s.Run(context.Background(), stages.Mail, newTx(), nil)
	s.Run(context.Background(), stages.Data, newTx(), nil)
	// A second pipeline with the same Metrics, as after a reload,
	// continues the same series.
	build().Begin().Run(context.Background(), stages.Data, newTx(), nil)

	want := `
# HELP mailgate_stage_errors_total Stage calls that broke (error, timeout, panic, invalid verdict or edit) and had on_error applied.
# TYPE mailgate_stage_errors_total counter
mailgate_stage_errors_total{kind="clamav",stage="clamav"} 2
mailgate_stage_errors_total{kind="spf",stage="spf"} 0
# HELP mailgate_stage_timeouts_total Stage calls that ran out of time; also counted in mailgate_stage_errors_total.
# TYPE mailgate_stage_timeouts_total counter
mailgate_stage_timeouts_total{kind="clamav",stage="clamav"} 2
mailgate_stage_timeouts_total{kind="spf",stage="spf"} 0
# HELP mailgate_stage_verdicts_total Verdicts of stages by action, on_error verdicts included.
# TYPE mailgate_stage_verdicts_total counter
mailgate_stage_verdicts_total{action="continue",kind="clamav",stage="clamav"} 2
mailgate_stage_verdicts_total{action="tag",kind="spf",stage="spf"} 3
`
	if err := testutil.GatherAndCompare(reg, strings.NewReader(want),
		"mailgate_stage_errors_total", "mailgate_stage_timeouts_total", "mailgate_stage_verdicts_total"); err != nil {
		t.Error(err)
	}
	// One histogram series per stage and phase that ran.
	if n := testutil.CollectAndCount(reg, "mailgate_stage_duration_seconds"); n != 3 {
		t.Errorf("%d duration series, want 3 (spf mail, spf data, clamav data)", n)
	}
}

func TestStageLogLine(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
	f := &fake{name: "clamav", info: stages.Info{Kind: "clamav", Phases: stages.Rcpt | stages.Data},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{}, errors.New("scanner down")
		}}
	p := newPipelineSpecs(t, noThresholds, StageSpec{Stage: f, OnError: "skip", Timeout: time.Second})
	s := p.Begin()
	s.Run(context.Background(), stages.Rcpt, newTx(), log)
	if buf.Len() != 0 {
		t.Errorf("rcpt phase logged at Info: %s", buf.String())
	}
	s.Run(context.Background(), stages.Data, newTx(), log)
	var line map[string]any
	if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
		t.Fatalf("%v: %q", err, buf.String())
	}
	for k, v := range map[string]any{"msg": "stage", "stage": "clamav", "kind": "clamav", "phase": "data",
		"action": "continue", "error": "scanner down"} {
		if line[k] != v {
			t.Errorf("log %s = %v, want %v", k, line[k], v)
		}
	}
	if _, ok := line["duration"]; !ok {
		t.Error("log line without duration")
	}
}

func TestNewRefuses(t *testing.T) {
	a := &fake{name: "a", info: stages.Info{Phases: stages.Data}}
	for _, c := range []struct {
		name  string
		specs []StageSpec
		pol   policy.Policy
		want  string
	}{
		{"duplicate", []StageSpec{{Stage: a}, {Stage: a}}, noThresholds, `stage "a": name used twice`},
		{"no phase", []StageSpec{{Stage: &fake{name: "b"}}}, noThresholds, "declares no phase"},
		{"nil stage", []StageSpec{{}}, noThresholds, "stage 1: no stage"},
		{"bad on_error", []StageSpec{{Stage: a, OnError: "tmpfail"}}, noThresholds, `invalid on_error "tmpfail"`},
		{"bad subject tag", nil, policy.Policy{SubjectTag: "[SPAM]\r\nBcc: x"}, "subject_tag"},
		{"accept mapping", []StageSpec{{Stage: a, Results: map[string]stages.Action{"pass": stages.Accept}}}, noThresholds,
			`stage "a": results: "pass" maps to accept`},
		{"bad network", nil, policy.Policy{Block: policy.List{ClientIPs: []string{"10.0.0.0/33"}}}, `policy.block.client_ips[0]: unexpected "10.0.0.0/33"`},
		{"header injection", nil, policy.Policy{TagHeaders: []string{"X-A: b\r\nBcc: x@example.org"}}, "policy.tag_headers[0]"},
		{"bad result action", nil, policy.Policy{Overrides: []policy.Override{{Rcpts: []string{"a@example.test"},
			Results: map[string]map[string]string{"spf": {"fail": "drop"}}}}}, `policy.override[0].results.spf.fail: unexpected "drop"`},
	} {
		if _, err := New(c.specs, c.pol, Options{}); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.name, err, c.want)
		}
	}
}

// noop is a stage that does nothing, to measure what the pipeline costs.
type noop string

func (n noop) Name() string { return string(n) }

func (noop) Info() stages.Info { return stages.Info{Kind: "noop", Phases: stages.Data} }

func (noop) Run(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
	return stages.Verdict{}, nil
}

// deadlineNoop is a noop that returns by its deadline, as a plugin does.
type deadlineNoop struct{ noop }

func (deadlineNoop) ReturnsByDeadline() {}

// BenchmarkPipelineOverhead runs the data phase through 8 stages that do
// nothing: the cost of goroutines, timeouts, merge, metrics and logging;
// "deadline" with stages that return by their deadline (plugins), which
// are called without a goroutine each.
func BenchmarkPipelineOverhead(b *testing.B) {
	for _, deadline := range []bool{false, true} {
		name := "goroutine"
		if deadline {
			name = "deadline"
		}
		b.Run(name, func(b *testing.B) {
			var specs []StageSpec
			for i := range 8 {
				var st stages.Stage = noop("noop" + string(rune('0'+i)))
				if deadline {
					st = deadlineNoop{noop("noop" + string(rune('0'+i)))}
				}
				specs = append(specs, StageSpec{Stage: st})
			}
			p := newPipelineSpecs(b, defaultPolicy, specs...)
			tx := newTx()
			ctx := context.Background()
			b.ReportAllocs()
			for b.Loop() {
				p.Begin().Run(ctx, stages.Data, tx, nil)
			}
		})
	}
}

// TestThresholdNamesScorers: a decision by score names, in its reason, the
// stages that scored, highest first, with their own words (a spam
// stage's rule hits), across phases; the top one is the deciding stage.
func TestThresholdNamesScorers(t *testing.T) {
	dnsbl := &fake{name: "zen", info: stages.Info{Kind: "dnsbl", Phases: stages.Connect},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Score: 3, Result: "listed"}, nil
		}}
	spam := returns("spam", stages.Verdict{Score: 9, Result: "spam", Reason: "BODY_PRIZE=2,GTUBE=7"})
	ham := returns("clean", stages.Verdict{Score: -1, Result: "ham"})
	s := newPipeline(t, defaultPolicy, dnsbl, spam, ham).Begin()
	tx := newTx()
	if d := s.Run(context.Background(), stages.Connect, tx, nil); d.Action != stages.Continue {
		t.Fatalf("connect: %s (%s)", d.Action, d.Reason)
	}
	d := s.Run(context.Background(), stages.Data, tx, nil)
	want := "score 11 reached quarantine_score 10 of policy default; scored by spam 9 (BODY_PRIZE=2,GTUBE=7), zen 3 (listed)"
	if d.Action != stages.Quarantine || d.Stage != "spam" || d.Reason != want {
		t.Errorf("got %s by %q (%s)\nwant quarantine by \"spam\" (%s)", d.Action, d.Stage, d.Reason, want)
	}
}
