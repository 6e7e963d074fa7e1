package resolver

import (
	"errors"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// The gateway's [dns] timeout comes before a kind's default; a config
// block's keys come before both, and bad values are refused by key.
func TestSettings(t *testing.T) {
	if s := Defaults(stages.Env{}, 2*time.Second, 10); s.DNSTimeout != stages.Duration(2*time.Second) || s.CacheSize != 10 {
		t.Errorf("no [dns] timeout: %+v", s)
	}
	env := stages.Env{DNSServers: []string{"127.0.0.1:53"}, DNSTimeout: 5 * time.Second}
	if s := Defaults(env, 2*time.Second, 10); s.DNSTimeout != stages.Duration(5*time.Second) {
		t.Errorf("[dns] timeout 5s: %+v", s)
	}
	for _, c := range []struct {
		s   Settings
		key string
	}{
		{Settings{DNSTimeout: 0, CacheSize: 1}, "dns_timeout"},
		{Settings{DNSTimeout: stages.Duration(time.Second), CacheSize: -1}, "cache_size"},
	} {
		var ce *stages.ConfigError
		if _, err := c.s.New(env); !errors.As(err, &ce) || ce.Key != c.key {
			t.Errorf("%+v: %v, want a ConfigError about %s", c.s, err, c.key)
		}
	}
	r, err := Settings{DNSTimeout: stages.Duration(time.Second), CacheSize: 0}.New(env)
	if err != nil || r.cache != nil {
		t.Errorf("cache_size 0: %v, cache %v", err, r.cache)
	}
}
