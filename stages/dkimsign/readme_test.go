package dkimsign

import (
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, with each key file it names made first (in a
// temporary directory, the only change to the example), and checks the
// README has every kind's skeleton with this kind's result words.
func TestReadme(t *testing.T) {
	dir := t.TempDir()
	keyLine := regexp.MustCompile(`(?m)^file = "([^"]+)"\n(algorithm = "([^"]+)")?`)
	var built []readmetest.Stage
	for _, ex := range readmetest.Examples(t, "README.md") {
		conf := keyLine.ReplaceAllStringFunc(string(ex), func(m string) string {
			sub := keyLine.FindStringSubmatch(m)
			alg := sub[3]
			if alg == "" {
				alg = RSASHA256
			}
			file := writeKey(t, dir, filepath.Base(sub[1]), alg).file
			return strings.Replace(m, sub[1], file, 1)
		})
		built = append(built, readmetest.Load(t, "README.md", []byte(conf), "dkim-sign", New)...)
	}
	if len(built) != 2 {
		t.Fatalf("%d dkim-sign examples, want 2", len(built))
	}
	if n := len(built[1].Filter.(*Filter).keys["example.test"]); n != 2 {
		t.Errorf("second example: %d keys for example.test, want 2", n)
	}
	if got := built[1].Results; got["nokey"] != stages.TempFail {
		t.Errorf("second example maps %v; want nokey = tempfail, as its text says", got)
	}
	readmetest.Skeleton(t, "README.md", built[0].Filter.Info())
}
