package policy

import (
	"path/filepath"
	"testing"

	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestStageREADMEExamples loads every TOML example of every kind's README
// (and the example plugin's) as the gateway loads a config file: each
// must be a valid config once the prelude's required keys are added. Each
// kind's own tests build the stages of the same examples (readmetest), so
// together they keep the docs true for both halves of a config.
func TestStageREADMEExamples(t *testing.T) {
	files, _ := filepath.Glob("../stages/*/README.md")
	files = append(files, "../examples/plugins/exeblock/README.md")
	n := 0
	for _, f := range files {
		for _, b := range readmetest.Examples(t, f) {
			n++
			if _, err := Parse(f, append([]byte(readmetest.Prelude), b...)); err != nil {
				t.Errorf("%v\n%s", err, b)
			}
		}
	}
	if n < 6 {
		t.Fatalf("only %d examples in %q", n, files)
	}
}
