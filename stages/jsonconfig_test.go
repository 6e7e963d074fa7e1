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
		{`{"timeout": 5}`, "timeout", "unexpected number; expect a string"},
		{`{"timeout": "soon"}`, "timeout", `unexpected duration "soon"; expect a positive duration such as "30s", "5m" or "1h30m"`},
		{`{"max": "lots"}`, "max", `unexpected size "lots"; expect a byte count such as "50MB", "512KiB" or "1000000"`},
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
		{Duration(0), "a string"},
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
