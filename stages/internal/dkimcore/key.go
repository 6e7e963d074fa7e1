package dkimcore

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
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

// RSA key sizes. RFC 8301 §3.2: signers MUST use keys of at least 1024
// bits, verifiers MUST NOT consider signatures with shorter keys valid,
// and verifiers MUST be able to validate keys of 1024 to 4096 bits; so
// keys made here stay within that, and keys verified here may be longer,
// up to a bound of ours (a verification's cost grows with the key, and the
// key is the sender's choice).
const (
	MinRSABits       = 1024
	MaxSignRSABits   = 4096
	MaxVerifyRSABits = 8192
)

// Rules are the choices RFC 8301 took away. Every stage verifies with the
// zero value; Legacy exists so that the dkim stage's conformance test can
// check canonicalization and crypto against a corpus whose signatures
// nearly all predate RFC 8301.
type Rules struct {
	// Legacy accepts rsa-sha1 and RSA keys under 1024 bits.
	Legacy bool
}

// Algorithm is a signing algorithm of the a= tag.
type Algorithm string

const (
	RSASHA256     Algorithm = "rsa-sha256"     // RFC 6376 §3.3.1
	Ed25519SHA256 Algorithm = "ed25519-sha256" // RFC 8463 §3
	RSASHA1       Algorithm = "rsa-sha1"       // RFC 6376 §3.3.1; refused by RFC 8301 but with Rules.Legacy
)

// ParseAlgorithm reads an a= value, without regard to case (ABNF strings,
// RFC 5234 §2.3). rsa-sha1 is refused unless r.Legacy: RFC 8301 §3.1 says
// signers MUST NOT use it and verifiers MUST NOT consider it valid.
func (r Rules) ParseAlgorithm(v string) (Algorithm, error) {
	switch a := Algorithm(strings.ToLower(StripFWS(v))); a {
	case RSASHA256, Ed25519SHA256:
		return a, nil
	case RSASHA1:
		if r.Legacy {
			return a, nil
		}
		return "", errors.New("rsa-sha1 is not accepted (RFC 8301)")
	default:
		return "", errors.New("unsupported algorithm")
	}
}

// KeyType is the k= of the keys that make a's signatures.
func (a Algorithm) KeyType() string {
	if a == Ed25519SHA256 {
		return "ed25519"
	}
	return "rsa"
}

// Hash is the hash a's signatures are made over, of the body (bh=) and of
// the header.
func (a Algorithm) Hash() crypto.Hash {
	if a == RSASHA1 {
		return crypto.SHA1
	}
	return crypto.SHA256
}

// Key is a public key record (RFC 6376 §3.6.1).
type Key struct {
	Type   string // k=: "rsa" or "ed25519"
	Public crypto.PublicKey
	Hashes []string // h=: acceptable hash algorithms, lower case; nil means all
	Flags  []string // t=: "y" testing, "s" strict (the caller's to apply)
}

// ErrNoKey is a key record that does not exist: the name has no TXT
// record (RFC 6376 §6.1.2: PERMFAIL, no key for signature).
var ErrNoKey = errors.New("no key record")

// ErrKeyRecord matches (errors.Is) every error of ParseKey: a key record
// that exists but cannot be used (RFC 6376 §6.1.2: PERMFAIL), as opposed
// to a lookup that failed.
var ErrKeyRecord = errors.New("unusable key record")

// keyError is an error of ParseKey; its text is the reason alone.
type keyError string

func (e keyError) Error() string        { return string(e) }
func (e keyError) Is(target error) bool { return target == ErrKeyRecord }

func keyErrorf(format string, args ...any) error { return keyError(fmt.Sprintf(format, args...)) }

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
// publish (erratum 3017), a PKCS#1 RSAPublicKey; an Ed25519 key is the 32
// raw bytes (RFC 8463 §4.2). Unknown tags (the g= of RFC 4871, which RFC
// 6376 removed) are ignored. Key types, hash and service names compare
// without regard to case.
//
// A line break in the record counts as white space, where RFC 6376 wants
// FWS: a record published from a zone file written over several lines
// has bare LFs in it, and reading them as spaces changes no key.
func (r Rules) ParseKey(record string) (*Key, error) {
	record = strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(record)
	ts, err := ParseTags(record)
	if err != nil {
		return nil, keyErrorf("key record: %v", err)
	}
	if v, ok := ts.Get("v"); ok && (v != "DKIM1" || ts[0].Name != "v") {
		return nil, keyError("key record has an unsupported version")
	}
	k := &Key{Type: "rsa"}
	if v, ok := ts.Get("k"); ok {
		k.Type = strings.ToLower(StripFWS(v))
	}
	if v, ok := ts.Get("h"); ok {
		for _, h := range SplitList(v) {
			k.Hashes = append(k.Hashes, strings.ToLower(h))
		}
	}
	if v, ok := ts.Get("t"); ok {
		k.Flags = SplitList(v)
	}
	if v, ok := ts.Get("s"); ok {
		if !slices.ContainsFunc(SplitList(v), func(s string) bool { return s == "*" || strings.EqualFold(s, "email") }) {
			return nil, keyError("key record is not for email")
		}
	}
	p, ok := ts.Get("p")
	if !ok {
		return nil, keyError("key record has no p tag")
	}
	p = StripFWS(p)
	if p == "" {
		// §3.6.1 p=: an empty value means the key was revoked.
		return nil, keyError("key revoked")
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, keyError("bad base64 in key record")
	}
	switch k.Type {
	case "rsa":
		pub, err := r.parseRSA(der)
		if err != nil {
			return nil, err
		}
		k.Public = pub
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, keyErrorf("ed25519 key of %d bytes; expect %d (RFC 8463)", len(der), ed25519.PublicKeySize)
		}
		k.Public = ed25519.PublicKey(der)
	default:
		return nil, keyError("unsupported key type")
	}
	return k, nil
}

func (r Rules) parseRSA(der []byte) (*rsa.PublicKey, error) {
	var pub *rsa.PublicKey
	if any, err := x509.ParsePKIXPublicKey(der); err == nil {
		rk, ok := any.(*rsa.PublicKey)
		if !ok {
			return nil, keyError("key record: k=rsa but p is not an RSA key")
		}
		pub = rk
	} else if rk, err := x509.ParsePKCS1PublicKey(der); err == nil {
		pub = rk
	} else {
		return nil, keyError("key record: p is not an RSA public key")
	}
	switch bits := pub.N.BitLen(); {
	case bits < MinRSABits && !r.Legacy:
		return nil, keyErrorf("RSA key of %d bits is too short (RFC 8301)", bits)
	case bits > MaxVerifyRSABits:
		return nil, keyErrorf("RSA key of %d bits is too long (at most %d)", bits, MaxVerifyRSABits)
	}
	return pub, nil
}

// Fits says whether k may verify signatures of algorithm a: the key type
// is a's, and h=, if present, allows a's hash (RFC 6376 §3.6.1).
func (k *Key) Fits(a Algorithm) error {
	if k.Type != a.KeyType() {
		return keyError("key type does not match the algorithm")
	}
	want := strings.TrimPrefix(string(a), a.KeyType()+"-")
	if k.Hashes != nil && !slices.Contains(k.Hashes, want) {
		return keyError("key record does not allow the hash algorithm")
	}
	return nil
}

// TXTLookup looks up the TXT records of a name: each record's strings
// joined (RFC 6376 §3.6.2.2). An error wrapping resolver.ErrTemporary is a
// failure to be tried again later; a name without TXT records gives none
// and no error.
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
// parses is taken (§3.6.2.2 lets the verifier choose). A name without a
// record is ErrNoKey; a lookup error is returned as the lookup gave it.
func (r Rules) LookupKey(ctx context.Context, lookup TXTLookup, s, d string) (*Key, error) {
	recs, err := lookup(ctx, s+"._domainkey."+d)
	if err != nil {
		return nil, err
	}
	if len(recs) == 0 {
		return nil, ErrNoKey
	}
	var first error
	for _, rec := range recs {
		k, err := r.ParseKey(rec)
		if err == nil {
			return k, nil
		}
		if first == nil {
			first = err
		}
	}
	return nil, first
}

// ErrBadSignature is a signature that does not verify with its key.
var ErrBadSignature = errors.New("signature did not verify")

// Verify checks sig, the signature by algorithm a over data (HeaderData),
// with k. The data is hashed with a's hash and the digest signed, by
// RSASSA-PKCS1-v1_5 (RFC 6376 §3.3.1) or by Ed25519 (RFC 8463 §3:
// PureEdDSA over the SHA-256 digest). A key that does not fit a is the
// error Fits gives; a signature that does not verify is ErrBadSignature.
func Verify(k *Key, a Algorithm, data, sig []byte) error {
	if err := k.Fits(a); err != nil {
		return err
	}
	h := a.Hash().New()
	h.Write(data)
	digest := h.Sum(nil)
	switch pub := k.Public.(type) {
	case *rsa.PublicKey:
		if rsa.VerifyPKCS1v15(pub, a.Hash(), digest, sig) != nil {
			return ErrBadSignature
		}
	case ed25519.PublicKey:
		if !ed25519.Verify(pub, digest, sig) {
			return ErrBadSignature
		}
	default:
		return errors.New("unsupported key")
	}
	return nil
}

// Sign signs data with key (an *rsa.PrivateKey or ed25519.PrivateKey), the
// counterpart of Verify. It returns the algorithm the key makes.
func Sign(key crypto.Signer, data []byte) (Algorithm, []byte, error) {
	a, err := KeyAlgorithm(key)
	if err != nil {
		return "", nil, err
	}
	h := a.Hash().New()
	h.Write(data)
	digest := h.Sum(nil)
	switch k := key.(type) {
	case *rsa.PrivateKey:
		sig, err := rsa.SignPKCS1v15(rand.Reader, k, a.Hash(), digest)
		return a, sig, err
	case ed25519.PrivateKey:
		return a, ed25519.Sign(k, digest), nil
	}
	return "", nil, fmt.Errorf("unsupported key type %T; expect RSA or Ed25519", key)
}

// KeyAlgorithm returns the algorithm a private key signs with. An RSA key
// must have MinRSABits to MaxSignRSABits bits.
func KeyAlgorithm(key crypto.Signer) (Algorithm, error) {
	switch k := key.(type) {
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < MinRSABits || bits > MaxSignRSABits {
			return "", fmt.Errorf("RSA key of %d bits; expect %d to %d (RFC 8301 §3.2), 2048 recommended", bits, MinRSABits, MaxSignRSABits)
		}
		return RSASHA256, nil
	case ed25519.PrivateKey:
		return Ed25519SHA256, nil
	default:
		return "", fmt.Errorf("unsupported key type %T; expect RSA or Ed25519", key)
	}
}

// ParsePrivateKey reads a PEM private key for signing: PKCS#1 ("RSA
// PRIVATE KEY", as opendkim-genkey writes) or PKCS#8 ("PRIVATE KEY", RSA
// or Ed25519, as openssl genpkey and mailgate dkim keygen write), checked
// by KeyAlgorithm.
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
		return nil, fmt.Errorf("PEM block %q; expect \"PRIVATE KEY\" or \"RSA PRIVATE KEY\"", block.Type)
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
