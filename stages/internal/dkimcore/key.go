package dkimcore

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages/resolver"
)

// Key sizes accepted for RSA. RFC 8301 §3.2: verifiers MUST NOT consider
// signatures with keys under 1024 bits valid. The upper bound is ours: a
// verification's cost grows with the key, and the key is the sender's
// choice.
const (
	MinRSABits = 1024
	MaxRSABits = 8192
)

// Algorithm is a signing algorithm of the a= tag.
type Algorithm string

const (
	RSASHA256     Algorithm = "rsa-sha256"     // RFC 6376 §3.3.1
	Ed25519SHA256 Algorithm = "ed25519-sha256" // RFC 8463 §3
)

// ParseAlgorithm reads an a= value. rsa-sha1 is refused: RFC 8301 §3.1
// says signers MUST NOT use it and verifiers MUST NOT consider it valid.
// Values are case-sensitive, as every tag value of RFC 6376 is unless
// said otherwise.
func ParseAlgorithm(v string) (Algorithm, error) {
	switch a := Algorithm(v); a {
	case RSASHA256, Ed25519SHA256:
		return a, nil
	case "rsa-sha1":
		return "", errors.New("rsa-sha1 is not accepted (RFC 8301 §3.1)")
	default:
		return "", fmt.Errorf("unknown algorithm %q", clip(v))
	}
}

func (a Algorithm) keyType() string {
	if a == Ed25519SHA256 {
		return "ed25519"
	}
	return "rsa"
}

// Key is a public key record (RFC 6376 §3.6.1).
type Key struct {
	Type   string // k=: "rsa" or "ed25519"
	Public crypto.PublicKey
	Hashes []string // h=: acceptable hash algorithms; nil means all
	Flags  []string // t=: "y" testing, "s" strict
}

// ErrNoKey is a key record that does not exist: the name has no TXT
// record (RFC 6376 §6.1.2: PERMFAIL, no key for signature).
var ErrNoKey = errors.New("no key record")

// ParseKey reads a key record:
//
//	v= optional, "DKIM1", and then the first tag
//	h= acceptable hash algorithms, colon separated
//	k= key type, rsa by default
//	p= public key, base64 with white space allowed; empty: revoked
//	s= service types, "*" or a list including "email"
//	t= flags
//
// An RSA key is a DER SubjectPublicKeyInfo (RFC 6376 §3.6.1) or, as some
// publish, a PKCS#1 RSAPublicKey; an Ed25519 key is the 32 raw bytes
// (RFC 8463 §4).
//
// A line break in the record counts as white space, where RFC 6376 wants
// FWS: a record published from a zone file written over several lines
// has bare LFs in it, and reading them as spaces changes no key.
func ParseKey(record string) (*Key, error) {
	record = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(record)
	ts, err := ParseTags(record)
	if err != nil {
		return nil, fmt.Errorf("key record: %w", err)
	}
	if v, ok := ts.Get("v"); ok && (v != "DKIM1" || ts[0].Name != "v") {
		return nil, fmt.Errorf("key record: v=%q; expect DKIM1 as the first tag", clip(v))
	}
	k := &Key{Type: "rsa"}
	if v, ok := ts.Get("k"); ok {
		k.Type = v
	}
	if v, ok := ts.Get("h"); ok {
		k.Hashes = splitColon(v)
	}
	if v, ok := ts.Get("t"); ok {
		k.Flags = splitColon(v)
	}
	if v, ok := ts.Get("s"); ok {
		svc := splitColon(v)
		if !slices.Contains(svc, "*") && !slices.Contains(svc, "email") {
			return nil, fmt.Errorf("key record: service %q is not email", clip(v))
		}
	}
	p, ok := ts.Get("p")
	if !ok {
		return nil, errors.New("key record: no p=")
	}
	p = StripFWS(p)
	if p == "" {
		return nil, errors.New("key revoked (empty p=)")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, errors.New("key record: p= is not base64")
	}
	switch k.Type {
	case "rsa":
		pub, err := parseRSA(der)
		if err != nil {
			return nil, err
		}
		k.Public = pub
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, fmt.Errorf("key record: ed25519 key of %d bytes; expect %d", len(der), ed25519.PublicKeySize)
		}
		k.Public = ed25519.PublicKey(der)
	default:
		return nil, fmt.Errorf("key record: unknown key type %q", clip(k.Type))
	}
	return k, nil
}

func parseRSA(der []byte) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	if any, err := x509.ParsePKIXPublicKey(der); err == nil {
		r, ok := any.(*rsa.PublicKey)
		if !ok {
			return nil, errors.New("key record: k=rsa but p= is not an RSA key")
		}
		pub = r
	} else if r, err2 := x509.ParsePKCS1PublicKey(der); err2 == nil {
		pub = r
	} else {
		return nil, fmt.Errorf("key record: p= is not an RSA public key: %v", err)
	}
	if bits := pub.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
		return nil, fmt.Errorf("RSA key of %d bits; accepted are %d to %d (RFC 8301 §3.2)", bits, MinRSABits, MaxRSABits)
	}
	return pub, nil
}

func splitColon(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ":") {
		if s = strings.TrimSpace(StripFWS(s)); s != "" {
			out = append(out, s)
		}
	}
	return out
}

// TXTLookup looks up the TXT records of a name: each record's strings
// joined (RFC 6376 §3.6.2.2). An error wrapping resolver.ErrTemporary is a
// failure to be tried again later; a name without TXT records is ErrNoKey.
type TXTLookup func(ctx context.Context, name string) ([]string, error)

// ResolverTXT is a TXTLookup through the gateway's resolver.
func ResolverTXT(r *resolver.Resolver) TXTLookup {
	return func(ctx context.Context, name string) ([]string, error) {
		a, err := r.Lookup(ctx, name, dns.TypeTXT)
		if err != nil {
			return nil, err
		}
		var out []string
		for _, rr := range a.RRs {
			if ss := resolver.TXTStrings(rr); ss != nil {
				out = append(out, strings.Join(ss, ""))
			}
		}
		return out, nil
	}
}

// LookupKey fetches and parses the key of selector s in domain d, at
// s._domainkey.d (RFC 6376 §3.6.2.1). Of several records, the first that
// parses is taken (§3.6.2.2 lets the verifier choose).
func LookupKey(ctx context.Context, lookup TXTLookup, s, d string) (*Key, error) {
	name := s + "._domainkey." + d
	recs, err := lookup(ctx, name)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, fmt.Errorf("%s: %w", name, ErrNoKey)
	}
	var first error
	for _, r := range recs {
		k, err := ParseKey(r)
		if err == nil {
			return k, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, fmt.Errorf("%s: %w", name, first)
}

// Verify checks sig, the signature by algorithm a over data (the
// canonicalized header fields), with k. The data is hashed with SHA-256
// and the digest signed, by RSASSA-PKCS1-v1_5 (RFC 6376 §3.3.1) or by
// Ed25519 (RFC 8463 §3: PureEdDSA over the SHA-256 digest).
func Verify(k *Key, a Algorithm, data, sig []byte) error {
	if k.Type != a.keyType() {
		return fmt.Errorf("a=%s with a key of type %s", a, k.Type)
	}
	if k.Hashes != nil && !slices.Contains(k.Hashes, "sha256") {
		return errors.New("the key record does not allow sha256 (h=)")
	}
	digest := sha256.Sum256(data)
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
			return errors.New("signature does not verify")
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, digest[:], sig) {
			return errors.New("signature does not verify")
		}
	default:
		return errors.New("unsupported key")
	}
	return nil
}

// Sign signs data with key (an *rsa.PrivateKey or ed25519.PrivateKey), the
// counterpart of Verify. It returns the algorithm the key makes.
func Sign(key crypto.Signer, data []byte) (Algorithm, []byte, error) {
	digest := sha256.Sum256(data)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, crypto.SHA256, digest[:])
		return RSASHA256, sig, err
	case ed25519.PrivateKey:
		return Ed25519SHA256, ed25519.Sign(k, digest[:]), nil
	default:
		return "", nil, fmt.Errorf("unsupported key type %T; expect RSA or Ed25519", key)
	}
}

// KeyAlgorithm returns the algorithm a private key signs with.
func KeyAlgorithm(key crypto.Signer) (Algorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxRSABits {
			return "", fmt.Errorf("RSA key of %d bits; expect %d to %d (RFC 8301 §3.2)", bits, MinRSABits, MaxRSABits)
		}
		return RSASHA256, nil
	case ed25519.PrivateKey:
		return Ed25519SHA256, nil
	default:
		return "", fmt.Errorf("unsupported key type %T; expect RSA or Ed25519", key)
	}
}

// ParsePrivateKey reads a PEM private key for signing: PKCS#1 ("RSA
// PRIVATE KEY") or PKCS#8 ("PRIVATE KEY", RSA or Ed25519), the forms
// openssl and `mailgate dkim keygen` write. An RSA key must have 1024 to
// 8192 bits (RFC 8301 §3.2).
func ParsePrivateKey(pemText []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(pemText)
	if block == nil {
		return nil, errors.New("no PEM block; expect a PEM private key")
	}
	var key any
	var err error
	switch block.Type {
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q; expect RSA PRIVATE KEY or PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("parse %s: %w", block.Type, err)
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T; expect RSA or Ed25519", key)
	}
	if _, err := KeyAlgorithm(signer); err != nil {
		return nil, err
	}
	return signer, nil
}
