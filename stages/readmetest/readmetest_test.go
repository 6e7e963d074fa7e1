package readmetest

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
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

// goodReadme has the skeleton Skeleton asks for, with the things it must
// not be fooled by: a "## " line in a code block, an extra section after
// Configuration, a pipe inside a cell.
const goodReadme = "# fake\n\nThe fake stage looks at nothing, at MAIL FROM and at the end of DATA.\n\n" +
	"## Configuration\n\n| key | meaning |\n|---|---|\n| `word` | a word |\n\n" +
	"## How it works\n\n```\n## not a heading\n```\n\n" +
	"## Results\n\n| Result | Action | Score | Meaning |\n|---|---|---|---|\n| `hit` | reject | 1 | found it \\| or so |\n| `miss` | continue | 0 | did not |\n\n" +
	"Then another table, which is not the results':\n\n| other | x |\n|---|---|\n| `edit` | y |\n\n" +
	"## Metrics\n\nOnly the pipeline's per-stage series.\n\n" +
	"## Example\n\n```toml\n# a comment, not a heading\n[[stage]]\nname = \"f\"\nkind = \"fake\"\n```\n"

func TestSkeleton(t *testing.T) {
	info := stages.Info{Kind: "fake", Phases: stages.Mail | stages.Data, Results: []string{"hit", "miss"}}
	if errs := checkSkeleton(goodReadme, info); len(errs) != 0 {
		t.Fatalf("a README with the skeleton: %v", errs)
	}
	readme := filepath.Join(t.TempDir(), "README.md")
	if err := os.WriteFile(readme, []byte(goodReadme), 0o644); err != nil {
		t.Fatal(err)
	}
	Skeleton(t, readme, info)

	for _, tc := range []struct {
		name string
		edit func(string) string
		info func(*stages.Info)
		want string
	}{
		{"title", func(s string) string { return strings.Replace(s, "# fake", "# Fake stage", 1) }, nil,
			`the first line is "# Fake stage"; want the title "# fake"`},
		{"phase not named", nil, func(i *stages.Info) { i.Phases |= stages.Rcpt },
			"the text before ## Configuration does not name the rcpt phase"},
		{"no intro", func(s string) string {
			return strings.Replace(s, "The fake stage looks at nothing, at MAIL FROM and at the end of DATA.\n\n", "", 1)
		}, func(i *stages.Info) { i.Phases = 0 },
			"no paragraph after the title"},
		{"section before Configuration", func(s string) string {
			return strings.Replace(s, "## Configuration", "## Overview\n\nx\n\n## Configuration", 1)
		}, nil,
			"the first section is ## Overview; want ## Configuration"},
		{"missing section", func(s string) string { return strings.Replace(s, "## Metrics", "## Monitoring", 1) }, nil,
			"no ## Metrics section"},
		{"order", func(s string) string {
			s = strings.Replace(s, "## Results", "## TMP", 1)
			s = strings.Replace(s, "## Metrics", "## Results", 1)
			return strings.Replace(s, "## TMP", "## Metrics", 1)
		}, nil, "sections in the order Configuration, Metrics, Results, Example"},
		{"empty metrics", func(s string) string { return strings.Replace(s, "Only the pipeline's per-stage series.", "", 1) }, nil,
			"## Metrics is empty"},
		{"example without toml", func(s string) string { return strings.Replace(s, "```toml\n#", "```\n#", 1) }, nil,
			"## Example has no ```toml block"},
		{"word not declared", nil, func(i *stages.Info) { i.Results = []string{"hit"} },
			`## Results names "miss", which kind fake does not declare (hit)`},
		{"word not named", nil, func(i *stages.Info) { i.Results = append(i.Results, "skipped") },
			`## Results does not name "skipped", a result word kind fake declares`},
		{"word twice", func(s string) string { return strings.Replace(s, "| `miss` |", "| `hit` |", 1) }, func(i *stages.Info) { i.Results = []string{"hit"} },
			`## Results names "hit" twice`},
		{"columns", func(s string) string {
			return strings.Replace(s, "| Result | Action | Score | Meaning |", "| Result | Action | When |", 1)
		}, nil,
			"## Results table has the columns Result | Action | When; want Result | Action | Score | Meaning"},
		{"no table", func(s string) string {
			start, end := strings.Index(s, "## Results\n"), strings.Index(s, "## Metrics")
			return s[:start] + "## Results\n\nhit or miss\n\n" + s[end:]
		}, nil, "## Results has no table"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			md, in := goodReadme, info
			in.Results = slices.Clone(info.Results)
			if tc.edit != nil {
				md = tc.edit(md)
			}
			if tc.info != nil {
				tc.info(&in)
			}
			errs := checkSkeleton(md, in)
			if !slices.ContainsFunc(errs, func(err error) bool { return strings.Contains(err.Error(), tc.want) }) {
				t.Errorf("errors %v; want one with %q", errs, tc.want)
			}
		})
	}
}

func TestStageResults(t *testing.T) {
	readme := filepath.Join(t.TempDir(), "README.md")
	os.WriteFile(readme, []byte("```toml\n[[stage]]\nname = \"one\"\nkind = \"fake\"\n[stage.results]\nhit = \"quarantine\"\n```\n"), 0o644)
	got := Stages(t, readme, "fake", func(stages.Env, stages.Config) (stages.Filter, error) {
		return &resulting{}, nil
	})
	if len(got) != 1 || got[0].Results["hit"] != stages.Quarantine || len(got[0].Results) != 1 {
		t.Errorf("results %v", got[0].Results)
	}
}

type resulting struct{ fake }

func (*resulting) Info() stages.Info { return stages.Info{Kind: "fake", Results: []string{"hit"}} }
