package policy

import (
	"strings"
	"testing"
)

// TestCheckResults: a result word the stage's kind does not report is an
// error at its line, with the nearest word; stages whose words are not
// known are left alone. Both typos here passed check and reload, and the
// mapping silently never applied.
func TestCheckResults(t *testing.T) {
	c, err := Parse("r.toml", []byte(`hostname = "mx.example.test"
data_dir = "/d"

[[stage]]
name = "spf"
kind = "spf"
[stage.results]
fial = "reject"
softfail = "tag"
Pass = "continue"

[[stage]]
name = "helo"
kind = "plugin"
path = "/usr/libexec/helocheck"
[stage.results]
whatever = "reject"

[[stage]]
name = "quiet"
kind = "plugin"
path = "/usr/libexec/quiet"
[stage.results]
listed = "reject"

[[stage]]
name = "av"
kind = "clamav"
[stage.results]
virus = "reject"

[[policy.override]]
rcpts = ["legal@example.test"]
results.spf.sofail = "reject"
results.spf.fail = "reject"
results.helo.other = "tag"
`))
	if err != nil {
		t.Fatal(err)
	}
	words := map[string][]string{
		"spf":    {"pass", "fail", "softfail", "neutral", "none", "permerror", "temperror"},
		"clamav": {"clean", "infected", "skipped"},
		"quiet":  nil, // a plugin that declares none
	}
	err = c.CheckResults(func(i int) (string, []string, bool) {
		st := c.Stages[i]
		if st.Kind == "plugin" {
			if st.Name == "quiet" {
				return "quiet", nil, true
			}
			return "", nil, false // not started: words unknown
		}
		return st.Kind, words[st.Kind], true
	})
	want := strings.Join([]string{
		`r.toml:8: stage[0].results.fial: unknown result of kind spf; did you mean fail?`,
		`r.toml:10: stage[0].results.Pass: unknown result of kind spf; did you mean pass?`,
		`r.toml:24: stage[2].results.listed: unknown result; kind quiet declares no result words, so none can be mapped`,
		`r.toml:30: stage[3].results.virus: unknown result of kind clamav; expect clean, infected or skipped`,
		`r.toml:34: policy.override[0].results.spf.sofail: unknown result of kind spf; did you mean softfail?`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
	if err := c.CheckResults(func(int) (string, []string, bool) { return "", nil, false }); err != nil {
		t.Errorf("no words known: %v", err)
	}
}

// TestCheckKinds: a kind that is neither built in nor "plugin" is refused
// with the nearest kind, and the result words of the built-in kinds are
// checked before any plugin runs.
func TestCheckKinds(t *testing.T) {
	c, err := Parse("k.toml", []byte(`hostname = "mx.example.test"
data_dir = "/d"
[[stage]]
name = "a"
kind = "spff"
[[stage]]
name = "b"
kind = "greylist"
[[stage]]
name = "c"
kind = "spf"
[stage.results]
fial = "reject"
[[stage]]
name = "d"
kind = "plugin"
path = "/x"
[stage.results]
anything = "reject"
`))
	if err != nil {
		t.Fatal(err)
	}
	err = c.CheckKinds(map[string][]string{"spf": {"pass", "fail"}, "clamav": {"clean", "infected"}})
	want := strings.Join([]string{
		`k.toml:5: stage[0].kind: unexpected "spff"; did you mean spf?`,
		`k.toml:8: stage[1].kind: unexpected "greylist"; expect clamav, spf or plugin`,
		`k.toml:13: stage[2].results.fial: unknown result of kind spf; did you mean fail?`,
	}, "\n")
	if err == nil || err.Error() != want {
		t.Errorf("got:\n%v\nwant:\n%s", err, want)
	}
}
