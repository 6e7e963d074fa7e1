package pipeline

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// testStage is a stage of the test plugin (plugins/internal/testplugin).
type testStage struct {
	name, config string
	spec         StageSpec // OnError, Timeout, Results
}

// startTestStages starts stages of the test plugin, in one process group
// (grouped) or each in a process of its own.
func startTestStages(t *testing.T, grouped bool, ts ...testStage) []StageSpec {
	t.Helper()
	bin := buildBinary(t, "../../plugins/internal/testplugin")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var ps []*host.Plugin
	if grouped {
		var members []host.Member
		for _, s := range ts {
			members = append(members, host.Member{Name: s.name, Kind: "testplugin", Config: []byte(s.config)})
		}
		var err error
		if ps, err = host.StartGroup(ctx, host.Spec{Name: "g", Cmd: []string{bin, "group"}, Logger: slog.New(slog.DiscardHandler)}, members); err != nil {
			t.Fatal(err)
		}
	} else {
		for _, s := range ts {
			p, err := host.Start(ctx, host.Spec{Name: s.name, Cmd: []string{bin}, Config: []byte(s.config), Logger: slog.New(slog.DiscardHandler)})
			if err != nil {
				t.Fatal(err)
			}
			ps = append(ps, p)
		}
	}
	specs := make([]StageSpec, len(ts))
	for i, p := range ps {
		t.Cleanup(func() { p.Close() })
		specs[i] = ts[i].spec
		specs[i].Stage = p
	}
	return specs
}

var pidRE = regexp.MustCompile(`pid [0-9]+`)

// A process group's stages run in one batch per phase, and the pipeline
// decides as it does when it calls each stage on its own: the same
// action, score, deciding stage, trace (durations aside) and edits,
// through result mappings, a stage that breaks, an accept that stops the
// chain, an editing stage last and editing stages before others.
func TestBatchAsOneByOne(t *testing.T) {
	chains := map[string][]testStage{
		"mapped": {
			{name: "a", config: `{"action": "tag", "score": 2, "results": ["none"]}`, spec: StageSpec{Results: map[string]stages.Action{"none": stages.Quarantine}}},
			{name: "b", config: `{"score": 1}`},
			{name: "edit", config: `{"add_header": "X-Seen: yes"}`},
		},
		// Editing stages before others: the process applies each one's
		// edits before the next group, so b sees a's field and c b's,
		// all in one batch.
		"edits-inside": {
			{name: "a", config: `{"add_header": "X-First: 1"}`},
			{name: "b", config: `{"add_header": "X-Second: 2", "result_header": "X-First"}`},
			{name: "c", config: `{"score": 1, "result_header": "X-Second"}`},
			{name: "d", config: `{"score": 2, "result_header": "X-First"}`},
		},
		// An edit the pipeline refuses before another step: the process
		// ends the batch there, and the stages are called one by one.
		"refused-inside": {
			{name: "a", config: `{"garbage": "edit"}`, spec: StageSpec{OnError: "skip"}},
			{name: "b", config: `{"score": 1, "result_header": "X-Ok"}`},
		},
		// A verdict the pipeline refuses from an editing stage: it
		// broke, so the steps after it must not see its edit.
		"garbage-inside": {
			{name: "a", config: `{"add_header": "X-First: 1", "garbage": "action"}`, spec: StageSpec{OnError: "skip"}},
			{name: "b", config: `{"score": 1, "result_header": "X-First"}`, spec: StageSpec{Results: map[string]stages.Action{"1": stages.Reject}}},
		},
		// A verdict the pipeline refuses from a stage that edits
		// nothing, before a group mate: the mate's answer stands, as
		// it saw what it would have seen alone.
		"garbage-mate": {
			{name: "a", config: `{"score": 1, "garbage": "action"}`, spec: StageSpec{OnError: "skip"}},
			{name: "b", config: `{"score": 2}`},
		},
		"broken": {
			{name: "a", config: `{"fail": true}`, spec: StageSpec{OnError: "skip"}},
			{name: "b", config: `{"score": 3}`},
		},
		"accept": {
			{name: "a", config: `{"score": 1}`},
			{name: "b", config: `{"action": "accept"}`},
			{name: "c", config: `{"score": 50}`},
		},
		"timeout": {
			{name: "a", config: `{"sleep": "1h"}`, spec: StageSpec{OnError: "accept", Timeout: 200 * time.Millisecond}},
			{name: "b", config: `{"score": 50}`},
		},
		// The stage that hangs is in the last group, with nothing longer
		// beside it: its timeout ends the batch's time too, and its
		// batch mate's answer must still count.
		"timeout-last": {
			{name: "a", config: `{"sleep": "1h"}`, spec: StageSpec{OnError: "skip", Timeout: 200 * time.Millisecond}},
			{name: "b", config: `{"score": 7}`, spec: StageSpec{Timeout: 200 * time.Millisecond}},
		},
	}
	for name, chain := range chains {
		t.Run(name, func(t *testing.T) {
			sender := "results@example.org"
			switch name {
			case "timeout", "timeout-last":
				sender = "sleep@example.org"
			case "edits-inside", "refused-inside", "garbage-inside", "garbage-mate":
				sender = "edits@example.org" // the config's verdicts and edits
			}
			var got [2]string
			for i, grouped := range []bool{false, true} {
				r := runChainOnce(t, grouped, chain, sender)
				if grouped != (r.batch == r.stages) {
					t.Fatalf("grouped %v: a batch of %d stages of %d", grouped, r.batch, r.stages)
				}
				// A batch cut short calls only the stages after it
				// again: each stage runs once, as one by one.
				for stage, n := range r.calls {
					if n > 1 {
						t.Errorf("grouped %v: stage %s ran %d times in one phase", grouped, stage, n)
					}
				}
				got[i] = r.got
				// refused-inside falls back by design, and says so.
				if grouped && strings.Contains(r.logged, "one by one") != (name == "refused-inside") {
					t.Errorf("the group's stages were (or were not) called one by one:\n%s", r.logged)
				}
			}
			if got[0] != got[1] {
				t.Errorf("one by one:\n%s\nbatched:\n%s", got[0], got[1])
			}
		})
	}
}

// A process that serves data path version 1 (as a plugin under a gateway
// from before version 2 would state) applies no edits within a batch: its
// batches end at an editing stage, and the pipeline decides as it does
// one by one, without falling back.
func TestBatchDataPathV1(t *testing.T) {
	t.Setenv("TESTPLUGIN_DATA_VERSION", "1")
	chain := []testStage{
		{name: "x", config: `{"score": 1}`},
		{name: "a", config: `{"add_header": "X-First: 1"}`},
		{name: "c", config: `{"score": 2, "result_header": "X-First"}`},
	}
	var got [2]string
	for i, grouped := range []bool{false, true} {
		r := runChainOnce(t, grouped, chain, "edits@example.org")
		if grouped && r.batch != 2 {
			t.Fatalf("a version-1 group: a batch of %d stages; want 2 (ending at the editing stage)", r.batch)
		}
		got[i] = r.got
		if grouped && strings.Contains(r.logged, "one by one") {
			t.Errorf("a version-1 group fell back to one by one:\n%s", r.logged)
		}
	}
	if got[0] != got[1] {
		t.Errorf("one by one:\n%s\nbatched:\n%s", got[0], got[1])
	}
	if !strings.Contains(got[1], "Result:1 ") {
		t.Errorf("stage c did not see stage a's edit:\n%s", got[1])
	}
}

// chainRun is what runChainOnce saw.
type chainRun struct {
	calls  map[string]int // how many times each stage ran
	got    string         // the decision, trace (durations left out) and header
	logged string         // the pipeline's log
	batch  int            // how many stages batchLen puts in the first batch
	stages int
}

// runChainOnce runs the data phase of chain's stages for sender, with
// the stages in one process group (grouped) or each in a process of its
// own, and no body.
func runChainOnce(t *testing.T, grouped bool, chain []testStage, sender string) chainRun {
	t.Helper()
	var logged bytes.Buffer
	log := slog.New(slog.NewTextHandler(&logged, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// Each stage tags its calls (testplugin's tag) in a file of this run.
	calls := filepath.Join(t.TempDir(), "calls")
	t.Setenv("TESTPLUGIN_CALLS", calls)
	tagged := make([]testStage, len(chain))
	for i, s := range chain {
		s.config = withTag(s.config, s.name)
		tagged[i] = s
	}
	p, err := New(startTestStages(t, grouped, tagged...), policy.Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15}, Options{Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	run := make([]*stage, len(p.stages))
	for j := range p.stages {
		run[j] = &p.stages[j]
	}
	tx := newTx()
	tx.From, tx.Body = sender, nil
	d := p.Begin().Run(context.Background(), stages.Data, tx, nil)
	for j := range d.Trace {
		d.Trace[j].DurationMS = 0
	}
	got := fmt.Sprintf("%s %v by %q (%s)\ntrace %+v\nheader %v", d.Action, d.Score, d.Stage, d.Reason, d.Trace, tx.Header)
	ran := map[string]int{}
	if b, err := os.ReadFile(calls); err == nil {
		for _, tag := range strings.Fields(string(b)) {
			ran[tag]++
		}
	}
	return chainRun{
		calls:  ran,
		got:    pidRE.ReplaceAllString(got, "pid N"), // the test plugin names its process
		logged: logged.String(),
		batch:  batchLen(run),
		stages: len(run),
	}
}

// withTag adds "tag": name to the JSON object config.
func withTag(config, name string) string {
	rest := strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(config), "{"))
	if rest == "" || rest == "}" {
		return fmt.Sprintf(`{"tag": %q}`, name)
	}
	return fmt.Sprintf(`{"tag": %q, `, name) + rest
}
