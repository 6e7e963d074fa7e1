package arc

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of an arc stage.
type Config struct {
	// dns_timeout and cache_size, as every kind that looks names up.
	resolver.Settings
	// Seal adds the stage's own ARC Set, signed with SealKey for
	// SealDomain and SealSelector.
	Seal         bool   `json:"seal"`
	SealDomain   string `json:"seal_domain"`
	SealSelector string `json:"seal_selector"`
	SealKey      string `json:"seal_key"` // PEM file: RSA (1024-8192 bits) or Ed25519
}

// defaultDNSTimeout is the DNSTimeout of a stage whose Env has none.
const defaultDNSTimeout = 3 * time.Second

// New builds an arc filter from its config block. The sealing key is read
// here, at start (and at reload, which builds the stage anew), so a key
// that cannot be used is a config error, not a failure at the first
// message.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{Settings: resolver.Defaults(env, defaultDNSTimeout, 1024)}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	f := &Filter{now: time.Now}
	if c.Seal {
		s, err := newSealer(c, env.Hostname)
		if err != nil {
			return nil, err
		}
		f.sealer = s
	} else {
		for key, v := range map[string]string{"seal_domain": c.SealDomain, "seal_selector": c.SealSelector, "seal_key": c.SealKey} {
			if v != "" {
				return nil, &stages.ConfigError{Key: key, Err: errors.New("set but seal is false; set seal = true to seal, or remove the key")}
			}
		}
	}
	r, err := c.New(env)
	if err != nil {
		return nil, err
	}
	f.v = verifier{lookup: dkimcore.ResolverTXT(r)}
	return f, nil
}

func newSealer(c Config, hostname string) (*sealer, error) {
	if !dkimcore.ValidDomain(c.SealDomain) {
		return nil, &stages.ConfigError{Key: "seal_domain", Err: fmt.Errorf("unexpected %q; expect the domain whose key signs, such as \"example.org\"", c.SealDomain)}
	}
	if !dkimcore.ValidDomain(c.SealSelector) {
		return nil, &stages.ConfigError{Key: "seal_selector", Err: fmt.Errorf("unexpected %q; expect a selector such as \"arc2026\"", c.SealSelector)}
	}
	if c.SealKey == "" {
		return nil, &stages.ConfigError{Key: "seal_key", Err: errors.New("missing; expect the path of a PEM private key (RSA or Ed25519)")}
	}
	pemText, err := os.ReadFile(c.SealKey)
	if err != nil {
		return nil, &stages.ConfigError{Key: "seal_key", Err: err}
	}
	key, err := dkimcore.ParsePrivateKey(pemText)
	if err != nil {
		return nil, &stages.ConfigError{Key: "seal_key", Err: fmt.Errorf("%s: %w", c.SealKey, err)}
	}
	alg, _ := dkimcore.KeyAlgorithm(key)
	if hostname == "" || !dkimcore.ValidDomain(hostname) {
		return nil, &stages.ConfigError{Key: "seal", Err: fmt.Errorf("the gateway's hostname %q is no domain name; the ARC-Authentication-Results needs it as authserv-id", hostname)}
	}
	return &sealer{domain: c.SealDomain, selector: c.SealSelector, key: key, alg: alg, authservID: hostname}, nil
}
