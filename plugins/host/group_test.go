package host

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/stages"
)

// startGroup starts a process group of the test plugin, one stage per
// config, named s0, s1, …
func startGroup(t *testing.T, spec Spec, configs ...string) []*Plugin {
	t.Helper()
	spec.Cmd = []string{testPlugin, "group"}
	return startGroupCmd(t, spec, configs...)
}

// startGroupCmd is startGroup with the executable spec.Cmd names.
func startGroupCmd(t *testing.T, spec Spec, configs ...string) []*Plugin {
	t.Helper()
	spec.Name = "g"
	if spec.Logger == nil {
		spec.Logger = discard
	}
	var members []Member
	for i, c := range configs {
		members = append(members, Member{Name: "s" + string(rune('0'+i)), Kind: "testplugin", Config: []byte(c)})
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	ps, err := StartGroup(ctx, spec, members)
	if err != nil {
		t.Fatalf("StartGroup: %v", err)
	}
	for _, p := range ps {
		t.Cleanup(func() { p.Close() })
	}
	return ps
}

// The stages of a group share one process, each with its own config, and
// a batch runs them as the pipeline would: the second sees the first's
// result, mapped, or its on_error when it broke; an accept stops it.
func TestGroup(t *testing.T) {
	ps := startGroup(t, Spec{}, `{"action": "tag", "score": 1, "results": ["none"]}`, `{"score": 2}`, `{"fail": true}`)
	if ps[0].State().PID != ps[1].State().PID || ps[0].State().PID == 0 || !ps[0].Batches(ps[1]) {
		t.Fatalf("not one process: %+v %+v", ps[0].State(), ps[1].State())
	}
	for i, want := range []float64{1, 2} {
		if v, err := run(ps[i], waitLong, dataTx("a@example.org", nil)); err != nil || v.Score != want {
			t.Errorf("%s: %+v, %v; want score %v", ps[i].Name(), v, err, want)
		}
	}

	broken := stages.Result{Stage: "s2", Kind: "testplugin", Action: stages.TempFail, Reason: "on_error tempfail", Errored: true}
	steps := []Step{
		{Stage: ps[0], Group: 0, Results: map[string]stages.Action{"none": stages.Reject}},
		{Stage: ps[2], Group: 0, Broken: broken},
		{Stage: ps[1], Group: 1},
	}
	tx := dataTx("results@example.org", nil)
	tx.Results = []stages.Result{{Stage: "before", Kind: "x", Action: stages.Continue, Result: "pass"}}
	got, err := ps[0].RunBatch(context.Background(), stages.Data, tx, steps)
	if err != nil || len(got) != 3 {
		t.Fatalf("RunBatch: %d answers, %v", len(got), err)
	}
	if got[0].Err != nil || got[0].Verdict.Result != "before=continue/pass" || got[0].Result.Action != stages.Tag {
		t.Errorf("first: %+v", got[0])
	}
	if got[1].Err == nil || got[1].Result != broken {
		t.Errorf("failing: %+v", got[1])
	}
	if want := "before=continue/pass s0=tag/before=continue/pass s2=tempfail/"; got[2].Verdict.Result != want {
		t.Errorf("second saw %q, want %q", got[2].Verdict.Result, want)
	}

	// Mapped: the first's word "none" is a reject for the ones after it.
	tx.Results = nil
	got, err = ps[0].RunBatch(context.Background(), stages.Data, tx, steps)
	if err != nil || len(got) != 3 || got[0].Result.Action != stages.Reject || got[2].Verdict.Result != "s0=reject/none s2=tempfail/" {
		t.Fatalf("mapped: %+v, %v", got, err)
	}

	// An accept ends the batch after its group.
	ps2 := startGroup(t, Spec{}, `{"action": "accept"}`, `{}`)
	got, err = ps2[0].RunBatch(context.Background(), stages.Data, tx, []Step{{Stage: ps2[0]}, {Stage: ps2[1], Group: 1}})
	if err != nil || len(got) != 1 || got[0].Verdict.Action != stages.Accept {
		t.Fatalf("accept: %+v, %v", got, err)
	}

	// A step past its timeout fails with DeadlineExceeded; the others go on.
	got, err = ps[0].RunBatch(context.Background(), stages.Data, dataTx("wait@example.org", nil),
		[]Step{{Stage: ps[0], Timeout: 100 * time.Millisecond, Broken: broken}})
	if err != nil || len(got) != 1 || !errors.Is(got[0].Err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %+v, %v", got, err)
	}
}

// A member's refused config names the member.
func TestGroupConfigRefused(t *testing.T) {
	_, err := StartGroup(context.Background(), Spec{Name: "g", Cmd: []string{testPlugin, "group"}, Logger: discard},
		[]Member{{Name: "fine", Kind: "testplugin"}, {Name: "typo", Kind: "testplugin", Config: []byte(`{"scroe": 1}`)}})
	var ce *ConfigError
	if !errors.As(err, &ce) || ce.Stage != "typo" || ce.Key != "scroe" {
		t.Fatalf("err %v, want the config error of stage typo", err)
	}
}

// kill -9 of a group's process fails the calls in flight of every member,
// and the restart brings all of them back. The crash is one failure of
// each member (see package host): not none, which would let a process
// that keeps crashing escape the circuit, and not one per call that it
// cut short, which would open the circuit of a member with a few calls in
// flight after one crash. The count is read while the process is down:
// a restart after a crash starts from none. The group's executable is a
// copy pinned by its hash, moved away before the kill so that no restart
// can happen before the count is read, and put back after. Neither the
// failed restarts in between nor a batch cut short add to the count.
func TestGroupCrash(t *testing.T) {
	exe := filepath.Join(t.TempDir(), "testplugin")
	b, err := os.ReadFile(testPlugin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(exe, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	spec := Spec{MaxFailures: 4, Cooldown: time.Hour, SHA256: hex.EncodeToString(sum[:]), RestartMax: 200 * time.Millisecond}
	spec.Cmd = []string{exe, "group"}
	ps := startGroupCmd(t, spec, `{"sleep": "1h"}`, `{"sleep": "1h"}`)
	const perMember = 2 // calls of its own in flight per member
	old := ps[0].State().PID
	const calls = perMember*2 + 1 // and a batch of both
	done := make(chan error, calls)
	go func() {
		_, err := ps[0].RunBatch(context.Background(), stages.Data, dataTx("sleep@example.org", nil),
			[]Step{{Stage: ps[0]}, {Stage: ps[1]}})
		done <- err
	}()
	for _, p := range ps {
		for range perMember {
			go func() {
				_, err := run(p, time.Hour, dataTx("sleep@example.org", nil))
				done <- err
			}()
		}
	}
	waitFor(t, waitLong, "every call to be in flight", func() bool {
		cur := ps[0].current()
		cur.data.mu.Lock()
		defer cur.data.mu.Unlock()
		return len(cur.data.pending) == calls
	})
	if err := os.Rename(exe, exe+".away"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(old, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	for range calls {
		select {
		case err := <-done:
			if err == nil {
				t.Fatal("an in-flight call of the killed group succeeded")
			}
		case <-time.After(waitLong):
			t.Fatal("an in-flight call still waiting after its group was killed")
		}
	}
	// Restarts that fail (the executable is away) are no calls and no
	// further failures: let two of them fail before the count is read.
	waitFor(t, waitLong, "two failed restarts", func() bool { return testutil.ToFloat64(ps[0].restarts) >= 3 })
	for _, p := range ps {
		if st := p.State(); st.Up || st.Failures != 1 || st.CircuitOpen {
			t.Errorf("%s after the crash: %+v, want down with 1 failure and the circuit closed", p.Name(), st)
		}
	}
	if err := os.Rename(exe+".away", exe); err != nil {
		t.Fatal(err)
	}
	for _, p := range ps {
		waitFor(t, waitLong, p.Name()+" to answer after the restart", func() bool {
			_, err := run(p, waitLong, dataTx("a@example.org", nil))
			return err == nil
		})
		if st := p.State(); st.PID == old || st.CircuitOpen || st.Failures != 0 {
			t.Errorf("%s after the restart: %+v, want a new process with no failures", p.Name(), st)
		}
	}
}
