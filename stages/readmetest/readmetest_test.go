package readmetest

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

type fake struct {
	env    stages.Env
	Word   string `json:"word"`
	closed bool
}

func (f *fake) Info() stages.Info { return stages.Info{Kind: "fake"} }

func (f *fake) Run(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
	return stages.Verdict{}, nil
}

func (f *fake) Close() error {
	f.closed = true
	return nil
}

func TestStages(t *testing.T) {
	readme := filepath.Join(t.TempDir(), "README.md")
	err := os.WriteFile(readme, []byte("# fake\n\n```toml\n"+`[[stage]]
name = "one"
kind = "fake"
[stage.config]
word = "hello"

[[stage]]
name = "other"
kind = "spf"
`+"```\n\nText, then another example:\n\n```toml\n"+`[[stage]]
name = "two"
kind = "fake"
`+"```\n"), 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var made []*fake
	factory := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		f := &fake{env: env}
		if err := cfg.Decode(f); err != nil {
			return nil, err
		}
		made = append(made, f)
		return f, nil
	}
	var got []Stage
	t.Run("load", func(t *testing.T) {
		got = Stages(t, readme, "fake", factory)
	})
	if len(got) != 2 || got[0].Name != "one" || got[1].Name != "two" {
		t.Fatalf("stages %+v", got)
	}
	if got[0].JSON != `{"word":"hello"}` || got[1].JSON != "{}" {
		t.Errorf("JSON %q, %q", got[0].JSON, got[1].JSON)
	}
	if made[0].Word != "hello" || made[0].env.Hostname != "mx.example.test" {
		t.Errorf("built %+v", made[0])
	}
	if !made[0].closed || !made[1].closed {
		t.Error("filters not closed when the test ended")
	}
}
