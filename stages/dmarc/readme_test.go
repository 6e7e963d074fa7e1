package dmarc

import (
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads the README's example as the gateway does, builds the
// stage from it (with a data dir, as reports = true needs), and checks the
// README has every kind's skeleton with this kind's result words.
func TestReadme(t *testing.T) {
	dir := t.TempDir()
	withDir := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DataDir = dir
		return New(env, cfg)
	}
	sts := readmetest.Stages(t, "README.md", "dmarc", withDir)
	if len(sts) != 1 {
		t.Fatalf("README.md has %d dmarc stages, want 1", len(sts))
	}
	f := sts[0].Filter.(*Filter)
	if !f.trusted["lists.example.org"] || f.reporter == nil {
		t.Errorf("README config: trusted %v, reporter %v", f.trusted, f.reporter)
	}
	if r := sts[0].Results; r[Quarantine] != stages.Tag || len(r) != 1 {
		t.Errorf("README [stage.results] %v; want quarantine = tag", r)
	}
	readmetest.Skeleton(t, "README.md", f.Info())
}
