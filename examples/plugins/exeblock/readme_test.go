package main

import (
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadmeConfig configures the plugin with the [stage.config] of the
// README's example, as the gateway would: loaded from TOML, sent as JSON.
func TestReadmeConfig(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "plugin", New)
	if len(sts) != 1 {
		t.Fatalf("README has %d plugin stages, want 1", len(sts))
	}
	st, err := sdktest.Stage(t, New, sts[0].JSON)
	if err != nil {
		t.Fatalf("README config %s: %v", sts[0].JSON, err)
	}
	v := run(t, st, message(t, mixed("b1", attachment("application/pdf", "invoice.pdf", "base64", b64(fakePE())))))
	if v.Reply == nil || v.Reply.Text != "Executable attachments are not accepted here" {
		t.Errorf("reply %v", v.Reply)
	}
	if r := sts[0].Results; r["too-complex"] != stages.Quarantine || len(r) != 1 {
		t.Errorf("README [stage.results] %v; want too-complex = quarantine", r)
	}
	readmetest.Skeleton(t, "README.md", st.Info())
}
