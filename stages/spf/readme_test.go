package spf

import (
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// TestReadmeExample loads the README's example through the real config
// loader and builds the stage from it, in process and over the plugin
// protocol, so the documentation cannot drift from the code.
func TestReadmeExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) != 1 {
		t.Fatalf("README.md has %d toml blocks, want 1", len(blocks))
	}
	// The block shows a stage only; the loader also wants a data_dir.
	cfg, err := policy.Parse("README.md", append([]byte("data_dir = \"/var/lib/mailgate\"\n"), blocks[0][1]...))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Stages) != 1 || cfg.Stages[0].Kind != "spf" {
		t.Fatalf("README stages: %+v", cfg.Stages)
	}
	srv := testServer(t)
	env := stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}}
	f, err := New(env, cfg.StageConfig(0))
	if err != nil {
		t.Fatalf("README config: %v", err)
	}
	spf := f.(*Filter)
	if spf.actions[Fail] != stages.Reject || spf.actions[TempError] != stages.TempFail || spf.scores[Fail] != 10 || spf.scores[Neutral] != 0.5 {
		t.Errorf("README config decoded to actions %v scores %v", spf.actions, spf.scores)
	}
	v, _ := f.Run(context.Background(), stages.Mail, tx("192.0.2.99", "mail.example.net", "joe@fail.example.com"))
	if v.Action != stages.Reject || v.Reply == nil || v.Reply.String() != "550 5.7.23 SPF fail: Not from here, 192.0.2.99." {
		t.Errorf("README config on a fail: %+v reply %v", v, v.Reply)
	}

	js, err := cfg.StageConfigJSON(0)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sdktest.Stage(t, New, string(js))
	if err != nil {
		t.Fatalf("README config over the plugin protocol: %v", err)
	}
	if info := st.Info(); info.Kind != "spf" || info.Phases != stages.Mail|stages.Data || !info.Edits {
		t.Errorf("Info over the plugin protocol: %+v", info)
	}
}
