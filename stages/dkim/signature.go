package dkim

import (
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// problem is why a signature did not pass: the RFC 8601 result it gives
// and a short text. Texts are this package's and dkimcore's words, never
// copied from the message or DNS, except clipped names (authres quotes
// them in the reason).
type problem struct {
	result string
	text   string
}

func permerror(format string, args ...any) *problem {
	return &problem{PermError, fmt.Sprintf(format, args...)}
}

// signature is a parsed DKIM-Signature field (RFC 6376 §3.5).
type signature struct {
	field stages.Field
	tags  dkimcore.Tags

	algorithm   dkimcore.Algorithm
	headerCanon dkimcore.Canon
	bodyCanon   dkimcore.Canon
	domain      string // d=, as written (compared without case)
	selector    string
	identifier  string // i=, decoded; "@" + domain when absent
	headers     []string
	length      int64 // l=, or -1
	bodyHash    []byte
	sig         []byte
	b           string // b= without FWS, for header.b
}

// parseSignature reads field f (a DKIM-Signature) and checks it as RFC
// 6376 §6.1.1 says, before any DNS query. It returns the signature as far
// as it could read it (for header.d, header.s, header.b) and the problem
// that stops it from being verified, if any.
func parseSignature(f stages.Field, r dkimcore.Rules, now time.Time) (*signature, *problem) {
	s := &signature{field: f, length: -1}
	tags, err := dkimcore.ParseTags(f.Value)
	if err != nil {
		return s, permerror("signature syntax: %v", err)
	}
	s.tags = tags
	get := func(name string) string { v, _ := tags.Get(name); return v }
	s.domain = dkimcore.StripFWS(get("d"))
	s.selector = dkimcore.StripFWS(get("s"))
	s.b = dkimcore.StripFWS(get("b"))

	// §6.1.1: the version first, then the required tags.
	switch v, ok := tags.Get("v"); {
	case ok && v == "1":
	case r.Legacy && (!ok || v == "0.5"):
	case !ok:
		return s, permerror("no v tag (required since RFC 6376)")
	default:
		return s, permerror("unsupported version")
	}
	for _, name := range []string{"a", "b", "bh", "d", "h", "s"} {
		if _, ok := tags.Get(name); !ok {
			return s, permerror("missing %s tag", name)
		}
	}
	if s.domain == "" || s.selector == "" {
		return s, permerror("empty d or s tag")
	}
	if s.algorithm, err = r.ParseAlgorithm(get("a")); err != nil {
		return s, permerror("%v", err)
	}
	if s.bodyHash, err = base64.StdEncoding.DecodeString(dkimcore.StripFWS(get("bh"))); err != nil {
		return s, permerror("bad base64 in bh tag")
	}
	if s.sig, err = base64.StdEncoding.DecodeString(s.b); err != nil || len(s.sig) == 0 {
		return s, permerror("bad base64 in b tag")
	}

	s.headerCanon, s.bodyCanon = dkimcore.Simple, dkimcore.Simple
	if c, ok := tags.Get("c"); ok {
		if s.headerCanon, s.bodyCanon, err = dkimcore.ParseCanon(c); err != nil {
			return s, permerror("unsupported canonicalization")
		}
	}

	s.identifier = "@" + s.domain
	if i, ok := tags.Get("i"); ok {
		id, err := dkimcore.DecodeQP(i)
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

	s.headers = dkimcore.SplitList(get("h"))
	if !dkimcore.ContainsFold(s.headers, "from") {
		// §5.4: the From field MUST be signed.
		return s, permerror("From field not signed")
	}

	if l, ok := tags.Get("l"); ok {
		l = dkimcore.StripFWS(l)
		n, err := strconv.ParseUint(l, 10, 63)
		if err != nil && !isDigits(l) {
			return s, permerror("bad l tag")
		}
		if err != nil || len(l) > 76 {
			n = 1<<63 - 1 // more than any body: the body hash cannot match
		}
		s.length = int64(n)
	}

	if q, ok := tags.Get("q"); ok {
		// §3.5 q=: a list of methods; one this verifier knows suffices.
		if !dkimcore.ContainsFold(dkimcore.SplitList(q), "dns/txt") && !(r.Legacy && dkimcore.ContainsFold(dkimcore.SplitList(q), "dns")) {
			return s, permerror("no supported query method")
		}
	}

	var signed, expires int64 = -1, -1
	if t, ok := tags.Get("t"); ok {
		if signed, err = strconv.ParseInt(dkimcore.StripFWS(t), 10, 64); err != nil || signed < 0 {
			return s, permerror("bad t tag")
		}
	}
	if x, ok := tags.Get("x"); ok {
		if expires, err = strconv.ParseInt(dkimcore.StripFWS(x), 10, 64); err != nil || expires < 0 {
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

func isDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// checkKey checks a key record against the signature it is for: the
// key's own fit to the algorithm, and t=s (§3.6.1: the i= domain must be
// d= itself, not a subdomain).
func (s *signature) checkKey(k *dkimcore.Key) *problem {
	if err := k.Fits(s.algorithm); err != nil {
		return permerror("%v", err)
	}
	at := strings.LastIndexByte(s.identifier, '@')
	for _, f := range k.Flags {
		if f == "s" && !strings.EqualFold(s.identifier[at+1:], s.domain) {
			return permerror("key record requires the i tag domain to be d")
		}
	}
	return nil
}
