package spf

import (
	"context"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadmeExample loads the README's example through the real config
// loader and builds the stage from it, in process and over the plugin
// protocol, so the documentation cannot drift from the code.
func TestReadmeExample(t *testing.T) {
	srv := testServer(t)
	withServer := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		return New(env, cfg)
	}
	sts := readmetest.Stages(t, "README.md", "spf", withServer)
	if len(sts) != 1 {
		t.Fatalf("README.md has %d spf stages, want 1", len(sts))
	}
	f := sts[0].Filter
	spf := f.(*Filter)
	if spf.scores[Fail] != 10 || spf.scores[Neutral] != 0.5 {
		t.Errorf("README config decoded to scores %v", spf.scores)
	}
	if r := sts[0].Results; r["fail"] != stages.Reject || r["temperror"] != stages.TempFail || len(r) != 2 {
		t.Errorf("README [stage.results] %v; want fail = reject, temperror = tempfail", r)
	}
	// The stage reports; the mapping decides, with the stage's reply.
	v, _ := f.Run(context.Background(), stages.Mail, tx("192.0.2.99", "mail.example.net", "joe@fail.example.com"))
	if v.Action != stages.Continue || v.Score != 10 || v.Reply == nil || v.Reply.String() != "550 5.7.23 SPF fail: Not from here, 192.0.2.99." {
		t.Errorf("README config on a fail: %+v reply %v", v, v.Reply)
	}
	readmetest.Skeleton(t, "README.md", f.Info())

	st, err := sdktest.Stage(t, New, sts[0].JSON)
	if err != nil {
		t.Fatalf("README config over the plugin protocol: %v", err)
	}
	if info := st.Info(); info.Kind != "spf" || info.Phases != stages.Mail|stages.Data || !info.Edits {
		t.Errorf("Info over the plugin protocol: %+v", info)
	}
}
