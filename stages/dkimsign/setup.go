package dkimsign

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// Config is the [stage.config] block of a dkim-sign stage.
type Config struct {
	// Keys are the [[stage.config.key]] tables: one per domain, selector
	// and algorithm. A domain with an RSA and an Ed25519 key gets two
	// signatures (RFC 8463 §4: signers SHOULD sign with both while
	// verifiers that know only RSA remain).
	Keys []KeyConfig `json:"key"`
	// Headers are the fields signed, each instance present. The default
	// is opendkim's (libopendkim's should_signhdrs, after RFC 6376
	// §5.4.1).
	Headers []string `json:"headers"`
	// Oversign are fields of Headers named once more than the message has
	// them, so that one added on the way breaks the signature (RFC 6376
	// §8.15).
	Oversign []string `json:"oversign_headers"`
	// Canonicalization is "header/body", each simple or relaxed
	// (RFC 6376 §3.4).
	Canonicalization string `json:"canonicalization"`
}

// KeyConfig is one [[stage.config.key]] table.
type KeyConfig struct {
	Domain    string `json:"domain"`
	Selector  string `json:"selector"`
	File      string `json:"file"`
	Algorithm string `json:"algorithm"` // rsa-sha256 (default) or ed25519-sha256
}

// Algorithms are the signing algorithms a key may have (RFC 6376 §3.3,
// RFC 8463 §3). rsa-sha1 is not one: RFC 8301 §3.1 says signers MUST NOT
// use it.
const (
	RSASHA256     = string(dkimcore.RSASHA256)
	Ed25519SHA256 = string(dkimcore.Ed25519SHA256)
)

// DefaultHeaders are the fields signed by default: libopendkim's
// should_signhdrs, the list RFC 6376 §5.4.1 suggests.
func DefaultHeaders() []string {
	return []string{"From", "Sender", "Reply-To", "Subject", "Date", "Message-ID", "To", "Cc",
		"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "Content-ID", "Content-Description",
		"Resent-Date", "Resent-From", "Resent-Sender", "Resent-To", "Resent-Cc", "Resent-Message-ID",
		"In-Reply-To", "References",
		"List-Id", "List-Help", "List-Unsubscribe", "List-Subscribe", "List-Post", "List-Owner", "List-Archive"}
}

// DefaultOversign are the fields oversigned by default: those a forger
// would most like to add a second of.
func DefaultOversign() []string { return []string{"From", "Subject", "To", "Date"} }

// key is a loaded signing key.
type key struct {
	domain, selector, algorithm, file string
	signer                            crypto.Signer
}

// New builds a dkim-sign filter from its config block, loading every key
// file: a key that cannot be used is a config error naming the key and
// its file, so `mailgate check` and a reload refuse it before any mail
// goes out unsigned.
func New(_ stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{Headers: DefaultHeaders(), Oversign: DefaultOversign(), Canonicalization: "relaxed/relaxed"}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	f := &Filter{keys: map[string][]key{}, headers: c.Headers, now: time.Now}
	var err error
	if f.headerCanon, f.bodyCanon, err = parseCanon(c.Canonicalization); err != nil {
		return nil, &stages.ConfigError{Key: "canonicalization", Err: err}
	}
	if !slices.ContainsFunc(c.Headers, func(h string) bool { return strings.EqualFold(h, "From") }) {
		// RFC 6376 §5.4: the From field MUST be signed.
		return nil, &stages.ConfigError{Key: "headers", Err: errors.New(`expect a list that includes "From" (RFC 6376 §5.4)`)}
	}
	for _, h := range c.Headers {
		if err := stages.CheckFieldName(h); err != nil {
			return nil, &stages.ConfigError{Key: "headers", Err: err}
		}
	}
	for _, h := range c.Oversign {
		if !slices.ContainsFunc(c.Headers, func(s string) bool { return strings.EqualFold(s, h) }) {
			return nil, &stages.ConfigError{Key: "oversign_headers", Err: fmt.Errorf("%q is not in headers; expect fields that are signed", h)}
		}
		f.oversign = append(f.oversign, strings.ToLower(h))
	}
	if len(c.Keys) == 0 {
		return nil, &stages.ConfigError{Key: "key", Err: errors.New("no key; expect at least one [[stage.config.key]] with domain, selector and file")}
	}
	seen := map[string]bool{}
	for i, kc := range c.Keys {
		k, err := loadKey(kc)
		if err != nil {
			return nil, &stages.ConfigError{Key: "key", Err: fmt.Errorf("key[%d]: %w", i, err)}
		}
		id := k.domain + " " + k.algorithm
		if seen[id] {
			return nil, &stages.ConfigError{Key: "key", Err: fmt.Errorf("key[%d]: a second %s key for domain %s; expect one key per domain and algorithm", i, k.algorithm, k.domain)}
		}
		seen[id] = true
		f.keys[k.domain] = append(f.keys[k.domain], k)
	}
	return f, nil
}

// loadKey checks one key table and reads its file.
func loadKey(kc KeyConfig) (key, error) {
	k := key{selector: kc.Selector, algorithm: kc.Algorithm, file: kc.File}
	if k.algorithm == "" {
		k.algorithm = RSASHA256
	}
	if kc.Domain == "" {
		return k, errors.New("domain: missing; expect the domain signed for, such as \"example.test\"")
	}
	d, err := address.Domain(kc.Domain)
	if err != nil || !address.IsHostname(d) || !strings.Contains(d, ".") {
		return k, fmt.Errorf("domain: unexpected %q; expect a domain name such as \"example.test\"", kc.Domain)
	}
	k.domain = d
	// The selector is one or more labels (RFC 6376 §3.1).
	if kc.Selector == "" || !address.IsHostname(kc.Selector) {
		return k, fmt.Errorf("selector: unexpected %q for domain %s; expect DNS labels such as \"mg2026\"", kc.Selector, d)
	}
	if k.algorithm != RSASHA256 && k.algorithm != Ed25519SHA256 {
		return k, fmt.Errorf("algorithm: unexpected %q for domain %s; expect %s or %s", kc.Algorithm, d, RSASHA256, Ed25519SHA256)
	}
	if kc.File == "" {
		return k, fmt.Errorf("file: missing for domain %s selector %s; expect the private key's PEM file (mailgate dkim keygen writes one)", d, k.selector)
	}
	if k.signer, err = ReadKey(kc.File, k.algorithm); err != nil {
		return k, fmt.Errorf("file: key %s._domainkey.%s: %w", k.selector, d, err)
	}
	return k, nil
}

// ReadKey reads a PEM private key file for algorithm, in the forms
// dkimcore.ParsePrivateKey reads (PKCS #1 as opendkim-genkey writes,
// PKCS #8 as openssl genpkey and mailgate dkim keygen write).
func ReadKey(file, algorithm string) (crypto.Signer, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err // names the file
	}
	k, err := dkimcore.ParsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	a, _ := dkimcore.KeyAlgorithm(k)
	switch {
	case string(a) == algorithm:
		return k, nil
	case a == dkimcore.RSASHA256:
		return nil, fmt.Errorf("%s: holds an RSA key; algorithm %s needs an Ed25519 key", file, algorithm)
	default:
		return nil, fmt.Errorf("%s: holds an Ed25519 key; algorithm %s needs an RSA key", file, algorithm)
	}
}

// parseCanon reads "header/body" (RFC 6376 §3.5, c=), both given.
func parseCanon(s string) (header, body dkimcore.Canon, err error) {
	h, b, ok := strings.Cut(s, "/")
	valid := func(c string) bool { return c == string(dkimcore.Simple) || c == string(dkimcore.Relaxed) }
	if !ok || !valid(h) || !valid(b) {
		return "", "", fmt.Errorf(`unexpected %q; expect "relaxed/relaxed", "relaxed/simple", "simple/relaxed" or "simple/simple"`, s)
	}
	return dkimcore.Canon(h), dkimcore.Canon(b), nil
}
