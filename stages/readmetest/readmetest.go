// Package readmetest loads the configuration examples of a kind's README
// as the gateway loads a config file and builds the stages they describe,
// so that a kind's tests keep its documentation true. Like net/http/httptest
// it is for tests only: it uses the engine's config loader (policy), which
// a kind's own code never imports.
package readmetest

import (
	"os"
	"regexp"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// prelude makes an example, which shows only its [[stage]] tables, a whole
// config.
const prelude = `hostname = "mx.example.test"
data_dir = "/var/lib/mailgate"
[server]
listen = ["127.0.0.1:2525"]
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:25"]
`

var tomlBlock = regexp.MustCompile("(?s)```toml\n(.*?)```")

// Stage is one stage of an example, built as the gateway builds it.
type Stage struct {
	Name   string        // the stage's name in the example
	Filter stages.Filter // what the kind's factory made of the example
	JSON   string        // the [stage.config] block as a plugin process gets it
}

// Stages loads every ```toml block of the Markdown file as a config and
// returns the stages of kind in them, built with factory (see Load). It
// fails t when the file has no toml block.
func Stages(t testing.TB, file, kind string, factory stages.Factory) []Stage {
	t.Helper()
	md, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	blocks := tomlBlock.FindAllSubmatch(md, -1)
	if len(blocks) == 0 {
		t.Fatalf("no toml example in %s", file)
	}
	var all []Stage
	for _, b := range blocks {
		all = append(all, Load(t, file, b[1], kind, factory)...)
	}
	return all
}

// Load parses config, a config file's text named file that may show only
// [[stage]] tables, with policy.Parse as the gateway does, and builds each
// stage of kind from its [stage.config] block with factory. The Env has
// the config's hostname and DNS servers. Filters that are stages.Closer
// are closed when the test ends. Load fails t when the config does not
// load, has no stage of kind, the factory refuses one, or a stage of kind
// maps a result word its filter does not declare.
func Load(t testing.TB, file string, config []byte, kind string, factory stages.Factory) []Stage {
	t.Helper()
	cfg, err := policy.Parse(file, append([]byte(prelude), config...))
	if err != nil {
		t.Fatalf("%v\n%s", err, config)
	}
	env := stages.Env{Hostname: cfg.Hostname, DNSServers: cfg.DNS.Servers, DNSTimeout: time.Duration(cfg.DNS.Timeout)}
	var built []Stage
	for i, st := range cfg.Stages {
		if st.Kind != kind {
			continue
		}
		f, err := factory(env, cfg.StageConfig(i))
		if err != nil {
			t.Fatalf("%s: stage %q: %v", file, st.Name, err)
		}
		if c, ok := f.(stages.Closer); ok {
			t.Cleanup(func() { c.Close() })
		}
		js, err := cfg.StageConfigJSON(i)
		if err != nil {
			t.Fatal(err)
		}
		built = append(built, Stage{Name: st.Name, Filter: f, JSON: string(js)})
	}
	if len(built) == 0 {
		t.Fatalf("%s: no %s stage in\n%s", file, kind, config)
	}
	// The result words an example maps must be those its kind reports.
	filters := map[int]stages.Filter{}
	for i, st := range cfg.Stages {
		for _, b := range built {
			if b.Name == st.Name {
				filters[i] = b.Filter
			}
		}
	}
	if err := cfg.CheckResults(func(i int) (string, []string, bool) {
		f, ok := filters[i]
		if !ok {
			return "", nil, false
		}
		return kind, f.Info().Results, true
	}); err != nil {
		t.Fatalf("%v\n%s", err, config)
	}
	return built
}
