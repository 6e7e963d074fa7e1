package clamav

import (
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, so the documented keys and values stay valid,
// and checks the README has every kind's skeleton with this kind's result
// words.
func TestReadme(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "clamav", New)
	if got := sts[0].Results; got["infected"] != stages.Quarantine {
		t.Errorf("README example maps %v; want infected = quarantine, as its text says", got)
	}
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
}
