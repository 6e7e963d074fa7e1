package stages

import (
	"errors"
	"reflect"
	"testing"
	"time"
)

type testConfig struct {
	Address string   `json:"address"`
	Timeout Duration `json:"timeout"`
	Max     Size     `json:"max"`
	Retries int      `json:"retries"`
	Names   []string `json:"names"`
	Sub     struct {
		On bool `json:"on"`
	} `json:"sub"`
}

func TestDecode(t *testing.T) {
	var c testConfig
	err := jsonConfig(`{"address": "unix:/run/x", "timeout": "5s", "max": "1MB", "retries": 3, "names": ["a"], "sub": {"on": true}}`).Decode(&c)
	if err != nil {
		t.Fatal(err)
	}
	if c.Address != "unix:/run/x" || time.Duration(c.Timeout) != 5*time.Second || c.Max != 1000*1000 ||
		c.Retries != 3 || len(c.Names) != 1 || !c.Sub.On {
		t.Errorf("decoded %+v", c)
	}
	for _, empty := range []string{"", "null", " {} "} {
		if err := jsonConfig(empty).Decode(&c); err != nil {
			t.Errorf("%q: %v", empty, err)
		}
	}
}

func TestDecodeErrors(t *testing.T) {
	for _, tc := range []struct{ in, key, msg string }{
		{`{"adress": "x"}`, "adress", "unknown key"},
		{`{"sub": {"of": true}}`, "sub", `unknown key "of"`},
		{`{"timeout": 5}`, "timeout", `unexpected number; expect a duration with a unit such as "30s", "5m" or "1h30m"`},
		{`{"timeout": "5"}`, "timeout", `unexpected "5"; expect a duration with a unit such as "30s", "5m" or "1h30m"`},
		{`{"timeout": "soon"}`, "timeout", `unexpected "soon"; expect a duration with a unit such as "30s", "5m" or "1h30m"`},
		{`{"timeout": "-5s"}`, "timeout", `unexpected "-5s"; expect a positive duration such as "30s"`},
		{`{"max": "lots"}`, "max", `unexpected "lots"; expect a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`},
		{`{"max": "50"}`, "max", `unexpected "50"; expect a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`},
		{`{"max": 50}`, "max", `unexpected number; expect a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`},
		{`{"retries": "3"}`, "retries", "unexpected string; expect an integer"},
		{`{"retries": 1.5}`, "retries", "unexpected number 1.5; expect an integer"},
		{`{"names": "a"}`, "names", "unexpected string; expect an array of strings"},
		{`{"sub": {"on": "yes"}}`, "sub", "sub.on: unexpected string; expect true or false"},
	} {
		var c testConfig
		err := jsonConfig(tc.in).Decode(&c)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || ce.Err.Error() != tc.msg {
			t.Errorf("%s: %v, want %s: %s", tc.in, err, tc.key, tc.msg)
		}
	}
	var c testConfig
	if err := jsonConfig(`["a"]`).Decode(&c); err == nil {
		t.Error("a JSON list decoded as a config")
	}
}

func TestDescribeType(t *testing.T) {
	for _, c := range []struct {
		v    any
		want string
	}{
		{"", "a string"},
		{Duration(0), `a duration with a unit such as "30s", "5m" or "1h30m"`},
		{Size(0), `a size with a unit: "50MB", "512KiB" (B, KB, MB, GB, KiB, MiB or GiB)`},
		{new(int), "an integer"},
		{uint8(0), "an integer"},
		{0.5, "a number"},
		{true, "true or false"},
		{[]string{}, "an array of strings"},
		{[]struct{}{}, "an array of tables"},
		{[]int{}, "an array"},
		{map[string]string{}, "a table"},
		{testConfig{}, "a table"},
	} {
		if got := DescribeType(reflect.TypeOf(c.v)); got != c.want {
			t.Errorf("DescribeType(%T) = %q, want %q", c.v, got, c.want)
		}
	}
}

// TestSize: a size needs its unit, and String writes one that reads back.
func TestSize(t *testing.T) {
	for in, want := range map[string]Size{
		"50MB": 50_000_000, "512KiB": 512 << 10, "1GiB": 1 << 30, "100B": 100, "0B": 0, " 2 KB ": 2000,
	} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err != nil || s != want {
			t.Errorf("%q: %d, %v; want %d", in, s, err, want)
		}
		var back Size
		if err := back.UnmarshalText([]byte(s.String())); err != nil || back != s {
			t.Errorf("%d wrote %q, which reads back as %d, %v", s, s.String(), back, err)
		}
	}
	for _, in := range []string{"50", "0", "", "MB", "-1MB", "1.5MB", "50XB"} {
		var s Size
		if err := s.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: accepted as %d", in, s)
		}
	}
	for s, want := range map[Size]string{50_000_000: "50MB", 1 << 10: "1KiB", 1500: "1500B", 0: "0B", 3 << 30: "3GiB"} {
		if got := s.String(); got != want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(s), got, want)
		}
	}
}

func TestReplacedByResults(t *testing.T) {
	for _, tc := range []struct {
		key      string
		mappings map[string]string
		want     string
	}{
		{"infected", map[string]string{"infected": "quarantine"}, `infected: replaced by [stage.results]: infected = "quarantine"`},
		{"action", map[string]string{"temperror": "tempfail", "fail": "reject"}, `action: replaced by [stage.results]: fail = "reject", temperror = "tempfail"`},
		{"reject_fail", nil, `reject_fail: replaced by [stage.results]; remove the key`},
	} {
		err := ReplacedByResults(tc.key, tc.mappings)
		var ce *ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || err.Error() != tc.want {
			t.Errorf("ReplacedByResults(%s, %v) = %v, want %s", tc.key, tc.mappings, err, tc.want)
		}
	}
}
