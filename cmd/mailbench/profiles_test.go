package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/google/pprof/profile"
)

// writeProfile writes a CPU profile to path whose samples are stacks of
// the named functions (innermost first) and their CPU nanoseconds.
func writeProfile(t *testing.T, path string, samples map[int64][]string) {
	t.Helper()
	p := &profile.Profile{SampleType: []*profile.ValueType{{Type: "samples", Unit: "count"}, {Type: "cpu", Unit: "nanoseconds"}}}
	ids := map[string]*profile.Location{}
	for ns, stack := range samples {
		s := &profile.Sample{Value: []int64{1, ns}}
		for _, name := range stack {
			loc := ids[name]
			if loc == nil {
				fn := &profile.Function{ID: uint64(len(p.Function) + 1), Name: name}
				p.Function = append(p.Function, fn)
				loc = &profile.Location{ID: uint64(len(p.Location) + 1), Line: []profile.Line{{Function: fn}}}
				p.Location = append(p.Location, loc)
				ids[name] = loc
			}
			s.Location = append(s.Location, loc)
		}
		p.Sample = append(p.Sample, s)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := p.Write(f); err != nil {
		t.Fatal(err)
	}
}

// TestProfileCost: the split of a segment's profiles into the gateway's
// call to its plugins and the plugins' work besides their filters, per
// message, over every instance of a line, and nothing of other segments.
func TestProfileCost(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "node-1"), filepath.Join(dir, "node-2")
	// Gateway of node 1: 6 ms in all, 2 of them calling plugins.
	writeProfile(t, filepath.Join(a, "small", "serve-100-2.pprof"), map[int64][]string{
		2e6: {"syscall.write", hostPackage + "(*dataClient).write", hostPackage + "(*Plugin).RunBatch", "main.main"},
		4e6: {"runtime.memmove", "github.com/mailgate/mailgate/spool.(*Writer).Commit"},
	})
	// Its plugin group: 5 ms, 3 of them in the filters.
	writeProfile(t, filepath.Join(a, "small", "plugin-spf+spam-101-2.pprof"), map[int64][]string{
		3e6: {"github.com/mailgate/mailgate/stages/spam.(*Spam).Run", filterRun, "x"},
		2e6: {"runtime.findRunnable", "runtime.schedule"},
	})
	// Node 2's gateway: 2 ms more, 1 calling plugins.
	writeProfile(t, filepath.Join(b, "small", "serve-200-2.pprof"), map[int64][]string{
		1e6:   {hostPackage + "(*dataClient).read"},
		1.5e6: {"runtime.gcBgMarkWorker"},
	})
	// Another segment, not counted.
	writeProfile(t, filepath.Join(a, "idle", "serve-100-3.pprof"), map[int64][]string{50e6: {"runtime.futex"}})

	c, err := profileCost(&line{profiles: []string{a, b}}, "small", 2)
	if err != nil {
		t.Fatal(err)
	}
	want := chainCost{messages: 2, gateway: 4.25, call: 1.5, plugins: 2.5, filters: 1.5}
	if c != want {
		t.Errorf("profileCost = %+v, want %+v", c, want)
	}
	if got := c.ipc(); got != 2.5 {
		t.Errorf("ipc = %v, want 2.5 (1.5 calling + 1 of the plugins' besides their filters)", got)
	}
	if _, err := profileCost(&line{profiles: []string{a}}, "large", 10); err == nil {
		t.Error("a segment without profiles gave no error")
	}
}
