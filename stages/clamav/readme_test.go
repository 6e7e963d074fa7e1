package clamav

import (
	"testing"

	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, so the documented keys and values stay valid.
func TestReadme(t *testing.T) {
	readmetest.Stages(t, "README.md", "clamav", New)
}
