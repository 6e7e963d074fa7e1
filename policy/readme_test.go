package policy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"
)

// readmePrelude makes an example that shows only [[stage]] tables a whole
// config.
const readmePrelude = `hostname = "mx.example.test"
data_dir = "/var/lib/mailgate"
[server]
listen = ["127.0.0.1:2525"]
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:25"]
`

var tomlBlock = regexp.MustCompile("(?s)```toml\n(.*?)```")

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
		md, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range tomlBlock.FindAllSubmatch(md, -1) {
			n++
			if _, err := Parse(f, append([]byte(readmePrelude), b[1]...)); err != nil {
				t.Errorf("%v\n%s", err, b[1])
			}
		}
	}
	if n < 6 {
		t.Fatalf("only %d examples in %q", n, files)
	}
}
