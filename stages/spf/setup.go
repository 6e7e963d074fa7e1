// Package spf checks the envelope sender against the SPF policy its domain
// publishes (RFC 7208): at MAIL FROM it reports the result with a score
// (the action is continue; [stage.results] maps a result to another); at
// the end of DATA it adds the
// Received-SPF header field (§9.1). Results reach later stages through
// tx.Results as the result word and an Authentication-Results style reason
// ("spf=fail smtp.mailfrom=example.com").
package spf

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of an spf stage.
type Config struct {
	// CheckHelo also checks the HELO identity (RFC 7208 §2.3) and records
	// its result in the reason; the verdict stays that of MAIL FROM.
	CheckHelo bool `json:"check_helo"`
	// Score maps a result word to the score the verdict adds. Listed
	// results replace the defaults (fail 5, softfail 2); others score 0.
	Score map[string]float64 `json:"score"`
	// dns_timeout and cache_size, as every kind that looks names up.
	resolver.Settings

	// Action and RejectFail chose actions before [stage.results] did;
	// they are refused with the mapping to write there instead.
	Action     map[string]string `json:"action"`
	RejectFail *bool             `json:"reject_fail"`
}

// defaultDNSTimeout is the DNSTimeout of a stage whose Env has none.
const defaultDNSTimeout = 3 * time.Second

// defaultConfig is the configuration of a stage with no [stage.config].
func defaultConfig(env stages.Env) Config {
	c := Config{
		CheckHelo: true,
		Score:     map[string]float64{string(Fail): 5, string(SoftFail): 2},
		Settings:  resolver.Defaults(env, defaultDNSTimeout, 4096),
	}
	return c
}

// New builds an spf filter from its config block.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := defaultConfig(env)
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if c.Action != nil {
		return nil, stages.ReplacedByResults("action", c.Action)
	}
	if c.RejectFail != nil {
		var m map[string]string
		if *c.RejectFail {
			m = map[string]string{string(Fail): "reject"}
		}
		return nil, stages.ReplacedByResults("reject_fail", m)
	}
	f := &Filter{
		hostname:  env.Hostname,
		checkHelo: c.CheckHelo,
		scores:    map[Result]float64{},
		memo:      newMemo(memoSize, memoTTL),
	}
	for name, s := range c.Score {
		res, err := parseResult("score", name)
		if err != nil {
			return nil, err
		}
		if math.IsNaN(s) || math.IsInf(s, 0) {
			return nil, &stages.ConfigError{Key: "score", Err: fmt.Errorf("%s: unexpected %v; expect a finite number", name, s)}
		}
		f.scores[res] = s
	}
	r, err := c.New(env)
	if err != nil {
		return nil, err
	}
	f.dns = r
	return f, nil
}

// parseResult checks a key of the score table: a result word mistyped
// there would silently never apply.
func parseResult(table, name string) (Result, error) {
	for _, r := range results {
		if name == string(r) {
			return r, nil
		}
	}
	words := Results()
	return "", &stages.ConfigError{Key: table, Err: fmt.Errorf("%s: unknown result; expect %s or %s", name,
		strings.Join(words[:len(words)-1], ", "), words[len(words)-1])}
}
