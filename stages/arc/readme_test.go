package arc

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
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

	// The sealing example over the plugin protocol, as the gateway runs it:
	// it seals a message that has no chain.
	st, err := sdktest.Stage(t, factory, sts[1].JSON)
	if err != nil {
		t.Fatalf("README config over the plugin protocol: %v", err)
	}
	if info := st.Info(); info.Kind != "arc" || info.Phases != stages.Data || !info.Edits || len(info.Results) != 3 {
		t.Errorf("Info over the plugin protocol: %+v", info)
	}
	v, err := st.Run(context.Background(), stages.Data, testTx(t, testMessage))
	if err != nil || v.Result != "none" || len(v.Edits) != 3 || v.Edits[0].Name != "ARC-Seal" {
		t.Errorf("sealing over the plugin protocol: %+v, %v", v, err)
	}
}
