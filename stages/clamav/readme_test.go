package clamav

import (
	"os"
	"regexp"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// prelude makes a README example, which shows only its [[stage]] block, a
// whole config.
const prelude = `hostname = "mx.example.test"
data_dir = "/var/lib/mailgate"
[server]
listen = ["127.0.0.1:2525"]
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:25"]
`

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, so the documented keys and values stay valid.
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("no toml example in README.md")
	}
	for _, b := range blocks {
		cfg, err := policy.Parse("README.md", []byte(prelude+string(b[1])))
		if err != nil {
			t.Fatalf("README example: %v\n%s", err, b[1])
		}
		n := 0
		for i, st := range cfg.Stages {
			if st.Kind != "clamav" {
				continue
			}
			n++
			if _, err := New(stages.Env{Hostname: cfg.Hostname}, cfg.StageConfig(i)); err != nil {
				t.Errorf("README example stage %q: %v", st.Name, err)
			}
		}
		if n == 0 {
			t.Errorf("README example without a clamav stage:\n%s", b[1])
		}
	}
}
