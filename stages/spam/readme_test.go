package spam

import (
	"context"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads the README's example as the gateway does, so the
// documentation cannot drift from the config the code accepts.
func TestReadme(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "spam", New)
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
	for _, st := range sts {
		s := st.Filter.(*Spam)
		if s.backend == nil || len(s.uribls) != 2 || s.weight != 0.8 {
			t.Errorf("README example decoded to %+v", s)
		}
		// The same block, as JSON, through a real plugin round trip.
		if _, err := sdktest.Stage(t, New, st.JSON); err != nil {
			t.Fatalf("README example over gRPC: %v", err)
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
