package resolver

import (
	"errors"
	"fmt"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// Settings are the keys of a stage kind that looks names up: embedded in
// the kind's Config, so that every kind spells, defaults and checks them
// alike.
type Settings struct {
	// DNSTimeout bounds one DNS query to one server; by default it is
	// [dns] timeout (Env.DNSTimeout), else the kind's own default.
	DNSTimeout stages.Duration `json:"dns_timeout"`
	// CacheSize is how many DNS answers are kept for their TTL; 0 turns
	// the cache off.
	CacheSize int `json:"cache_size"`
}

// Defaults are a kind's settings before its config block is read: env's
// [dns] timeout, or timeout when the gateway sets none, and cacheSize.
func Defaults(env stages.Env, timeout time.Duration, cacheSize int) Settings {
	if env.DNSTimeout > 0 {
		timeout = env.DNSTimeout
	}
	return Settings{DNSTimeout: stages.Duration(timeout), CacheSize: cacheSize}
}

// New checks s and returns the resolver it describes, on env's servers.
func (s Settings) New(env stages.Env) (*Resolver, error) {
	if s.DNSTimeout <= 0 {
		return nil, &stages.ConfigError{Key: "dns_timeout", Err: errors.New(`expect a duration above 0, such as "3s"`)}
	}
	if s.CacheSize < 0 {
		return nil, &stages.ConfigError{Key: "cache_size", Err: fmt.Errorf("unexpected %d; expect 0 (no cache) or more", s.CacheSize)}
	}
	return New(env.DNSServers, time.Duration(s.DNSTimeout), WithCache(s.CacheSize))
}
