// Package readmetest keeps a kind's README true: it loads the README's
// configuration examples and builds the stages they describe from their
// [stage.config] blocks, as a plugin process gets them (one JSON object,
// stages.JSONConfig), and checks that the README has the skeleton every
// kind's has (Skeleton). Like net/http/httptest it is for tests only. It
// reads the TOML itself and needs nothing of the engine: that the
// examples are also whole, valid configs for the gateway's loader is
// policy's own test (policy/readme_test.go).
package readmetest

import (
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// Prelude makes an example, which shows only its [[stage]] tables, a whole
// config: the keys every config must have.
const Prelude = `hostname = "mx.example.test"
data_dir = "/var/lib/mailgate"
[server]
listen = ["127.0.0.1:2525"]
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:25"]
`

var tomlBlock = regexp.MustCompile("(?s)```toml\n(.*?)```")

// Examples returns the text of every ```toml block of the Markdown file.
func Examples(t testing.TB, file string) [][]byte {
	t.Helper()
	md, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, b := range tomlBlock.FindAllSubmatch(md, -1) {
		out = append(out, b[1])
	}
	return out
}

// Stage is one stage of an example, built as the gateway builds it.
type Stage struct {
	Name   string        // the stage's name in the example
	Filter stages.Filter // what the kind's factory made of the example
	JSON   string        // the [stage.config] block as a plugin process gets it
	// Results is the example's [stage.results]: the actions it maps the
	// kind's result words to in place of the kind's defaults.
	Results map[string]stages.Action
}

// Stages loads every ```toml block of the Markdown file as a config and
// returns the stages of kind in them, built with factory (see Load). It
// fails t when the file has no toml block.
func Stages(t testing.TB, file, kind string, factory stages.Factory) []Stage {
	t.Helper()
	blocks := Examples(t, file)
	if len(blocks) == 0 {
		t.Fatalf("no toml example in %s", file)
	}
	var all []Stage
	for _, b := range blocks {
		all = append(all, Load(t, file, b, kind, factory)...)
	}
	return all
}

// Load reads config, a config file's text named file that may show only
// [[stage]] tables, and builds each stage of kind from its [stage.config]
// block with factory. The Env has the example's hostname (or the
// prelude's), [dns] servers and timeout. Filters that are stages.Closer are
// closed when the test ends. Load fails t when the text is not TOML, has no
// stage of kind, the factory refuses one, or a stage of kind maps a result
// word ([stage.results]) its filter does not declare or to an action
// stages.ParseAction does not know.
func Load(t testing.TB, file string, config []byte, kind string, factory stages.Factory) []Stage {
	t.Helper()
	var doc struct {
		Hostname string `toml:"hostname"`
		DNS      struct {
			Servers []string `toml:"servers"`
			Timeout string   `toml:"timeout"`
		} `toml:"dns"`
		Stages []struct {
			Name    string            `toml:"name"`
			Kind    string            `toml:"kind"`
			Config  map[string]any    `toml:"config"`
			Results map[string]string `toml:"results"`
		} `toml:"stage"`
	}
	if _, err := toml.Decode(Prelude+string(config), &doc); err != nil {
		t.Fatalf("%s: %v\n%s", file, err, config)
	}
	env := stages.Env{Hostname: doc.Hostname, DNSServers: doc.DNS.Servers}
	if doc.DNS.Timeout != "" {
		d, err := time.ParseDuration(doc.DNS.Timeout)
		if err != nil {
			t.Fatalf("%s: dns.timeout: %v", file, err)
		}
		env.DNSTimeout = d
	}
	var built []Stage
	for _, st := range doc.Stages {
		if st.Kind != kind {
			continue
		}
		js := []byte("{}")
		if st.Config != nil {
			var err error
			if js, err = json.Marshal(st.Config); err != nil {
				t.Fatalf("%s: stage %q: config as JSON: %v", file, st.Name, err)
			}
		}
		f, err := factory(env, stages.JSONConfig(js))
		if err != nil {
			t.Fatalf("%s: stage %q: %v", file, st.Name, err)
		}
		if c, ok := f.(stages.Closer); ok {
			t.Cleanup(func() { c.Close() })
		}
		// The result words an example maps must be those its kind reports.
		var results map[string]stages.Action
		for word, a := range st.Results {
			if !slices.Contains(f.Info().Results, word) {
				t.Fatalf("%s: stage %q: results.%s: not a result word of kind %s (%s)", file, st.Name, word, kind, strings.Join(f.Info().Results, ", "))
			}
			action, err := stages.ParseAction(a)
			if err != nil {
				t.Fatalf("%s: stage %q: results.%s: %v", file, st.Name, word, err)
			}
			if results == nil {
				results = map[string]stages.Action{}
			}
			results[word] = action
		}
		built = append(built, Stage{Name: st.Name, Filter: f, JSON: string(js), Results: results})
	}
	if len(built) == 0 {
		t.Fatalf("%s: no %s stage in\n%s", file, kind, config)
	}
	return built
}
