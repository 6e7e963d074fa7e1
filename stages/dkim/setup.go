// Package dkim verifies the DKIM signatures of a message (RFC 6376), with
// rsa-sha256 and ed25519-sha256 (RFC 8463), as RFC 8301 has it: rsa-sha1
// and RSA keys under 1024 bits do not pass. It reports one result per
// signature as Authentication-Results resinfo in the verdict's reason, and
// the best of them as the verdict's result; it never acts on its own.
//
// This package holds the rules of a DKIM-Signature (required tags, v=,
// i=, l=, x=, t=s) and the verdict; the machinery (tag lists,
// canonicalization, the signed fields, key records and their lookup, the
// algorithms) is stages/internal/dkimcore, shared with the dkim-sign and
// arc kinds. It is not go-msgauth's dkim.Verify, which rejects any l=
// outright, cannot read a header-only message without the blank line,
// compares the i= domain with case, hides the selector and b= that
// header.s and header.b need, and starts a goroutine per signature;
// go-msgauth's authres writes the reason, and its signer makes the test
// signatures.
package dkim

import (
	"fmt"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of a dkim stage.
type Config struct {
	// MaxSignatures is how many DKIM-Signature fields are evaluated, top
	// first; the others are counted in the reason, not checked.
	MaxSignatures int `json:"max_signatures"`
	// dns_timeout and cache_size, as every kind that looks names up.
	resolver.Settings
}

const (
	defaultMaxSignatures = 10
	// maxMaxSignatures bounds the work one message can ask for.
	maxMaxSignatures  = 100
	defaultDNSTimeout = 3 * time.Second
)

// New builds a dkim filter from its config block.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{MaxSignatures: defaultMaxSignatures, Settings: resolver.Defaults(env, defaultDNSTimeout, 4096)}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if c.MaxSignatures < 1 || c.MaxSignatures > maxMaxSignatures {
		return nil, &stages.ConfigError{Key: "max_signatures", Err: fmt.Errorf("unexpected %d; expect 1 to %d", c.MaxSignatures, maxMaxSignatures)}
	}
	r, err := c.New(env)
	if err != nil {
		return nil, err
	}
	return &Filter{v: &verifier{lookup: dkimcore.ResolverTXT(r), maxSigs: c.MaxSignatures, now: time.Now}}, nil
}
