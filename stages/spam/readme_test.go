package spam

import (
	"context"
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
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

// TestReadme loads the README's example as the gateway does, so the
// documentation cannot drift from the config the code accepts.
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("no toml block in README.md")
	}
	for _, b := range blocks {
		cfg, err := policy.Parse("README.md", []byte(prelude+string(b[1])))
		if err != nil {
			t.Fatalf("README example: %v", err)
		}
		n := 0
		for i, st := range cfg.Stages {
			if st.Kind != "spam" {
				continue
			}
			n++
			f, err := New(stages.Env{}, cfg.StageConfig(i))
			if err != nil {
				t.Fatalf("README example, stage %s: %v", st.Name, err)
			}
			s := f.(*Spam)
			if s.backend == nil || len(s.uribls) != 2 || s.weight != 0.8 {
				t.Errorf("README example decoded to %+v", s)
			}
			// The same block, as JSON, through a real plugin round trip.
			js, err := cfg.StageConfigJSON(i)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := sdktest.Stage(t, New, string(js)); err != nil {
				t.Fatalf("README example over gRPC: %v", err)
			}
		}
		if n == 0 {
			t.Error("README example has no spam stage")
		}
	}
}

// TestPlugin runs the scorer out of process as the gateway does: the
// message body and the earlier results cross the plugin boundary.
func TestPlugin(t *testing.T) {
	st, err := sdktest.Stage(t, New, `{"rule": [{"name": "SPF_FAIL", "score": 3, "result": "spf:fail"}]}`)
	if err != nil {
		t.Fatal(err)
	}
	if info := st.Info(); info.Phases != stages.Data || info.Needs&^stages.NeedEnvelope != stages.NeedHeader|stages.NeedBody|stages.NeedResults || info.Edits {
		t.Errorf("info %+v", info)
	}
	tx := parse(t, clean+gtube+"\n")
	tx.Results = []stages.Result{{Stage: "spf", Kind: "spf", Result: "fail"}}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := st.Run(ctx, stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Score != 1003 || v.Result != "gtube" || v.Reason != "GTUBE=1000,SPF_FAIL=3" {
		t.Errorf("verdict %+v", v)
	}

	if _, err := sdktest.Stage(t, New, `{"backend": "razor"}`); err == nil {
		t.Error("a bad backend was accepted over gRPC")
	}
}
