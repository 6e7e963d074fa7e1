package policy

import (
	"strings"
	"testing"
)

// TestHash: nodes whose configs differ only in what belongs to one node
// (its names, directory and listeners, comments) have the same hash; a
// change in what the cluster shares (a stage's config, a limit) changes it.
func TestHash(t *testing.T) {
	const shared = `
[[stage]]
name = "grey"
kind = "greylist"
[stage.config]
delay = "5m"

[[ratelimit]]
name = "per-client"
key = "client_ip"
rate = 100
per = "1h"
`
	node := func(name, extra string) *Config {
		t.Helper()
		src := `hostname = "` + name + `.example.test"
data_dir = "/var/lib/mailgate/` + name + `"
# node ` + name + `
[server]
listen = ["127.0.0.1:25` + name[len(name)-1:] + `"]
[admin]
listen = "127.0.0.1:80` + name[len(name)-1:] + `"
[cluster]
redis = "redis://cache.example.test:6379/0"
node = "` + name + `"
` + shared + extra
		c, err := Parse(name+".toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	a, b := node("mx1", ""), node("mx2", "")
	if a.Hash() != b.Hash() || len(a.Hash()) != 64 {
		t.Fatalf("nodes differing in their own keys only: %s, %s; want one hash", a.Hash(), b.Hash())
	}
	// The same shared part under other node keys, then with one change.
	for _, tc := range []struct{ name, src string }{
		{"", shared},
		{"a stage's config", strings.Replace(shared, `"5m"`, `"6m"`, 1)},
		{"a rate limit", strings.Replace(shared, "rate = 100", "rate = 101", 1)},
	} {
		other, err := Parse("x.toml", []byte(`hostname = "mx3.example.test"
data_dir = "/d"
[cluster]
redis = "redis://cache.example.test:6379/0"
node = "mx3"
`+tc.src))
		if err != nil {
			t.Fatal(err)
		}
		if same := other.Hash() == a.Hash(); same != (tc.name == "") {
			t.Errorf("%q changed: same hash %v", tc.name, same)
		}
	}
}
