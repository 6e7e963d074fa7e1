package main

import (
	"encoding/json"
	"os"
	"regexp"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
)

// TestReadmeConfig configures the plugin with the [stage.config] of the
// README's example, as the gateway would: TOML to a JSON object.
func TestReadmeConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)```toml\n(.*?)```").FindSubmatch(readme)
	if m == nil {
		t.Fatal("no toml block in README.md")
	}
	var doc struct {
		Stage []struct {
			Kind   string         `toml:"kind"`
			Config map[string]any `toml:"config"`
		} `toml:"stage"`
	}
	if _, err := toml.Decode(string(m[1]), &doc); err != nil {
		t.Fatal(err)
	}
	if len(doc.Stage) != 1 || doc.Stage[0].Kind != "plugin" {
		t.Fatalf("README stages: %+v", doc.Stage)
	}
	config, err := json.Marshal(doc.Stage[0].Config)
	if err != nil {
		t.Fatal(err)
	}
	st, err := sdktest.Stage(t, New, string(config))
	if err != nil {
		t.Fatalf("README config %s: %v", config, err)
	}
	v := run(t, st, message(t, mixed("b1", attachment("application/pdf", "invoice.pdf", "base64", b64(fakePE())))))
	if v.Reply == nil || v.Reply.Text != "Executable attachments are not accepted here" {
		t.Errorf("reply %v", v.Reply)
	}
}
