package greylist

import (
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, with a data directory of its own, so the
// documented keys and values stay valid, and checks the README has every
// kind's skeleton with this kind's result words.
func TestReadme(t *testing.T) {
	dir := t.TempDir()
	factory := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DataDir = dir
		return New(env, cfg)
	}
	sts := readmetest.Stages(t, "README.md", "greylist", factory)
	f := sts[0].Filter.(*Filter)
	if f.delay.String() != "5m0s" || f.autoAllow != 5 || !f.skipSPFPass || len(f.allow.senderDomains) != 1 {
		t.Errorf("README example built %+v", f)
	}
	readmetest.Skeleton(t, "README.md", f.Info())
}
