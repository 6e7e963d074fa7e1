package dkim

import (
	"context"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md and builds the stage
// from it, in process and over the plugin protocol, runs the first on the
// RFC 8463 message, and checks the README has every kind's skeleton with
// this kind's result words.
func TestReadme(t *testing.T) {
	srv := serveDNSFiles(t, "testdata/rfc8463/dns.txt")
	withServer := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		return New(env, cfg)
	}
	sts := readmetest.Stages(t, "README.md", "dkim", withServer)
	if len(sts) != 2 {
		t.Fatalf("README.md has %d dkim stages, want 2", len(sts))
	}
	if f := sts[1].Filter.(*Filter); f.v.maxSigs != 5 || sts[1].Results["temperror"] != stages.TempFail {
		t.Errorf("second example: max_signatures %d, results %v", f.v.maxSigs, sts[1].Results)
	}
	h, b := readMessage(t, "testdata/rfc8463/message.eml")
	v, err := sts[0].Filter.Run(context.Background(), stages.Data, &stages.Transaction{Header: h, Body: b})
	if err != nil || v.Result != Pass || v.Action != stages.Continue {
		t.Errorf("README config on the RFC 8463 message: %+v, %v", v, err)
	}
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())

	st, err := sdktest.Stage(t, New, sts[0].JSON)
	if err != nil {
		t.Fatalf("README config over the plugin protocol: %v", err)
	}
	if info := st.Info(); info.Kind != "dkim" || info.Phases != stages.Data || info.Needs&stages.NeedBody == 0 {
		t.Errorf("Info over the plugin protocol: %+v", info)
	}
}
