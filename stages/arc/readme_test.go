package arc

import (
	"encoding/json"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, and checks the README has every kind's
// skeleton with this kind's result words. The sealing example's key path
// is replaced by a key made for the test.
func TestReadme(t *testing.T) {
	srv := dnstest.NewServer(t, nil)
	key := writeKey(t, rsaKey(t))
	factory := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		var m map[string]any
		if err := cfg.Decode(&m); err != nil {
			return nil, err
		}
		if m["seal_key"] != nil {
			m["seal_key"] = key.file
		}
		b, _ := json.Marshal(m)
		return New(env, stages.JSONConfig(b))
	}
	sts := readmetest.Stages(t, "README.md", "arc", factory)
	if len(sts) != 2 {
		t.Fatalf("README.md has %d arc stages, want 2", len(sts))
	}
	if f := sts[0].Filter.(*Filter); f.sealer != nil {
		t.Error("the first example seals")
	}
	if f := sts[1].Filter.(*Filter); f.sealer == nil || f.sealer.domain != "lists.example.org" || f.sealer.selector != "arc2026" {
		t.Errorf("the sealing example: %+v", f.sealer)
	}
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
}
