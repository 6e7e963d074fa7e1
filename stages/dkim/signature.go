package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// problem is why a signature did not pass: the RFC 8601 result it gives
// and a short text. Texts are written here, never copied from the message
// or DNS, except clipped names (see clean in reason.go).
type problem struct {
	result string
	text   string
}

func permerror(format string, args ...any) *problem {
	return &problem{PermError, fmt.Sprintf(format, args...)}
}

// rules are the choices RFC 8301 and RFC 6376 took away. The stage always
// runs with the zero value (modern); the conformance test turns them on to
// check the verifier's canonicalization and crypto on the Mail::DKIM
// corpus, whose signatures nearly all predate them.
type rules struct {
	legacy bool // accept rsa-sha1, RSA keys under 1024 bits, v= absent or 0.5, and q=dns (draft-01)
}

// signature is a parsed DKIM-Signature field (RFC 6376 §3.5).
type signature struct {
	raw        string // the whole field as on the wire, folding kept, no final CRLF
	valueStart int    // where the tag list starts in raw
	tags       tagList

	algorithm   string // "rsa-sha256", "ed25519-sha256" (or "rsa-sha1", legacy)
	keyType     string // "rsa", "ed25519"
	hash        crypto.Hash
	headerCanon string
	bodyCanon   string
	domain      string // d=, as written (compared without case)
	selector    string
	identifier  string // i=, decoded; "@" + domain when absent
	headers     []string
	length      int64 // l=, or -1
	bodyHash    []byte
	sig         []byte
	b           string // b= without FWS, for header.b
}

// parseSignature reads the field raw ("DKIM-Signature: ...") and checks it
// as RFC 6376 §6.1.1 says, before any DNS query. It returns the signature
// as far as it could read it (for header.d, header.s, header.b) and the
// problem that stops it from being verified, if any.
func parseSignature(raw string, r rules, now time.Time) (*signature, *problem) {
	s := &signature{raw: raw, length: -1}
	colon := strings.IndexByte(raw, ':')
	s.valueStart = colon + 1
	tags, err := parseTags(raw[s.valueStart:])
	if err != nil {
		return s, permerror("signature syntax: %v", err)
	}
	s.tags = tags
	get := func(name string) string { v, _ := tags.get(name); return v }
	s.domain = stripFWS(get("d"))
	s.selector = stripFWS(get("s"))
	s.b = stripFWS(get("b"))

	// §6.1.1: the version first, then the required tags.
	switch v, ok := tags.get("v"); {
	case ok && v == "1":
	case r.legacy && (!ok || v == "0.5"):
	case !ok:
		return s, permerror("no v tag (required since RFC 6376)")
	default:
		return s, permerror("unsupported version")
	}
	for _, name := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags.get(name); !ok {
			return s, permerror("missing %s tag", name)
		}
	}
	if s.domain == "" || s.selector == "" {
		return s, permerror("empty d or s tag")
	}

	s.algorithm = strings.ToLower(stripFWS(get("a")))
	switch s.algorithm {
	case "rsa-sha256":
		s.keyType, s.hash = "rsa", crypto.SHA256
	case "ed25519-sha256":
		// RFC 8463 §3.
		s.keyType, s.hash = "ed25519", crypto.SHA256
	case "rsa-sha1":
		if !r.legacy {
			// RFC 8301 §3.1: verifiers MUST NOT consider rsa-sha1
			// signatures valid.
			return s, permerror("rsa-sha1 is not accepted (RFC 8301)")
		}
		s.keyType, s.hash = "rsa", crypto.SHA1
	default:
		return s, permerror("unsupported algorithm")
	}

	if s.bodyHash, err = base64.StdEncoding.DecodeString(stripFWS(get("bh"))); err != nil {
		return s, permerror("bad base64 in bh tag")
	}
	if s.sig, err = base64.StdEncoding.DecodeString(s.b); err != nil || len(s.sig) == 0 {
		return s, permerror("bad base64 in b tag")
	}

	s.headerCanon, s.bodyCanon = simple, simple
	if c, ok := tags.get("c"); ok {
		hc, bc, two := strings.Cut(strings.ToLower(stripFWS(c)), "/")
		s.headerCanon = hc
		if two {
			s.bodyCanon = bc
		}
		if !isCanon(s.headerCanon) || !isCanon(s.bodyCanon) {
			return s, permerror("unsupported canonicalization")
		}
	}

	s.identifier = "@" + s.domain
	if i, ok := tags.get("i"); ok {
		id, err := decodeQP(i)
		if err != nil {
			return s, permerror("bad i tag")
		}
		s.identifier = id
		// §3.5 i=: the domain of the AUID must be that of d= or a
		// subdomain of it; domain names compare without case.
		at := strings.LastIndexByte(id, '@')
		dom := strings.ToLower(id[at+1:])
		d := strings.ToLower(s.domain)
		if at < 0 || (dom != d && !strings.HasSuffix(dom, "."+d)) {
			return s, permerror("i tag domain is not d or a subdomain of it")
		}
	}

	s.headers = splitList(get("h"))
	from := false
	for _, h := range s.headers {
		if strings.EqualFold(h, "from") {
			from = true
		}
	}
	if !from {
		// §5.4: the From field MUST be signed.
		return s, permerror("From field not signed")
	}

	if l, ok := tags.get("l"); ok {
		l = stripFWS(l)
		n, err := strconv.ParseUint(l, 10, 63)
		if err != nil && !isDigits(l) {
			return s, permerror("bad l tag")
		}
		if err != nil || len(l) > 76 {
			n = 1<<63 - 1 // more than any body: the body hash cannot match
		}
		s.length = int64(n)
	}

	if q, ok := tags.get("q"); ok {
		// §3.5 q=: a list of methods; one this verifier knows suffices.
		dns := false
		for _, m := range splitList(q) {
			if strings.EqualFold(m, "dns/txt") || r.legacy && strings.EqualFold(m, "dns") {
				dns = true
			}
		}
		if !dns {
			return s, permerror("no supported query method")
		}
	}

	var signed, expires int64 = -1, -1
	if t, ok := tags.get("t"); ok {
		if signed, err = strconv.ParseInt(stripFWS(t), 10, 64); err != nil || signed < 0 {
			return s, permerror("bad t tag")
		}
	}
	if x, ok := tags.get("x"); ok {
		if expires, err = strconv.ParseInt(stripFWS(x), 10, 64); err != nil || expires < 0 {
			return s, permerror("bad x tag")
		}
		if signed >= 0 && expires < signed {
			// §3.5 x=: it MUST be greater than t=.
			return s, permerror("x tag before t tag")
		}
		if now.Unix() > expires {
			// §6.1.1: PERMFAIL (signature expired).
			return s, permerror("signature expired")
		}
	}
	return s, nil
}

func isCanon(s string) bool { return s == simple || s == relaxed }

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// withoutB returns the signature field as hashed: the value of b= taken
// out, everything else (FWS included) as it is (§3.7).
func (s *signature) withoutB() string {
	for _, t := range s.tags {
		if t.name == "b" {
			at := s.valueStart
			return s.raw[:at+t.start] + s.raw[at+t.end:]
		}
	}
	return s.raw
}

// key is a parsed key record (RFC 6376 §3.6.1).
type key struct {
	keyType  string
	pub      crypto.PublicKey
	hashes   []string // h=, nil for any
	strict   bool     // t=s: i= must be in d= itself, not a subdomain
	testing  bool     // t=y
	services []string
}

// parseKey reads a key record and checks it against the signature it is
// for.
func parseKey(txt string, s *signature, r rules) (*key, *problem) {
	tags, err := parseTags(txt)
	if err != nil {
		return nil, permerror("key record syntax: %v", err)
	}
	k := &key{keyType: "rsa"}
	// §3.6.1 v=: if present, it is DKIM1 and the first tag.
	if v, ok := tags.get("v"); ok && (v != "DKIM1" || tags[0].name != "v") {
		return nil, permerror("key record has an unsupported version")
	}
	p, ok := tags.get("p")
	if !ok {
		return nil, permerror("key record has no p tag")
	}
	p = stripFWS(p)
	if p == "" {
		// §3.6.1 p=: an empty value means the key was revoked.
		return nil, permerror("key revoked")
	}
	if kt, ok := tags.get("k"); ok {
		k.keyType = strings.ToLower(stripFWS(kt))
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, permerror("bad base64 in key record")
	}
	switch k.keyType {
	case "rsa":
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			// Erratum 3017: RSAPublicKey is found in the wild too.
			pub, err = x509.ParsePKCS1PublicKey(der)
		}
		rk, isRSA := pub.(*rsa.PublicKey)
		if err != nil || !isRSA {
			return nil, permerror("key record has no usable RSA key")
		}
		if bits := rk.N.BitLen(); bits < 1024 && !r.legacy {
			// RFC 8301 §3.2: verifiers MUST NOT consider signatures
			// with keys under 1024 bits valid.
			return nil, permerror("RSA key of %d bits is too short (RFC 8301)", bits)
		}
		k.pub = rk
	case "ed25519":
		// RFC 8463 §4.2: p= is the bare 32-octet key.
		if len(der) != ed25519.PublicKeySize {
			return nil, permerror("key record has no usable Ed25519 key")
		}
		k.pub = ed25519.PublicKey(der)
	default:
		return nil, permerror("unsupported key type")
	}
	if k.keyType != s.keyType {
		return nil, permerror("key type does not match the algorithm")
	}
	if h, ok := tags.get("h"); ok {
		want := strings.TrimPrefix(s.algorithm, s.keyType+"-")
		found := false
		for _, a := range splitList(h) {
			if strings.EqualFold(a, want) {
				found = true
			}
		}
		if !found {
			return nil, permerror("key record does not allow the hash algorithm")
		}
	}
	if sv, ok := tags.get("s"); ok {
		found := false
		for _, a := range splitList(sv) {
			if a == "*" || strings.EqualFold(a, "email") {
				found = true
			}
		}
		if !found {
			return nil, permerror("key record is not for email")
		}
	}
	if t, ok := tags.get("t"); ok {
		for _, f := range splitList(t) {
			switch f {
			case "s":
				k.strict = true
			case "y":
				k.testing = true
			}
		}
	}
	if k.strict {
		at := strings.LastIndexByte(s.identifier, '@')
		if !strings.EqualFold(s.identifier[at+1:], s.domain) {
			// §3.6.1 t=s: the i= domain must be d= itself.
			return nil, permerror("key record requires the i tag domain to be d")
		}
	}
	return k, nil
}

// verifySig checks the signature over the header hash.
func verifySig(k *key, h crypto.Hash, digest, sig []byte) bool {
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		return rsa.VerifyPKCS1v15(pub, h, digest, sig) == nil
	case ed25519.PublicKey:
		// RFC 8463 §3: Ed25519 signs the SHA-256 hash (PureEdDSA over
		// the digest).
		return ed25519.Verify(pub, digest, sig)
	}
	return false
}
