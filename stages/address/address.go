// Package address owns the rules by which mailgate reads and compares mail
// domains and addresses: where an address splits, what a host name is, and
// the one canonical form of a domain (lower case, no root dot, A-labels).
// The SMTP side puts every envelope address in that form where it enters,
// and the config loader does the same to every list entry, override and
// route, so that relay control, policy, lists, routes, stages, the relayed
// envelope and traces all compare the same strings. It sits under stages so
// that stages, policy and the gateway alike can import it; it imports
// nothing of mailgate.
package address

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// maxDomain is the longest domain name in text form: 255 octets on the
// wire (RFC 1035 §2.3.4) less the length octets of the first label and of
// the root.
const maxDomain = 253

// Errors of Parse, for the log; the client is told something generic.
var (
	ErrNoDomain = errors.New("address without local part or domain")
	ErrDomain   = errors.New("domain is not a host name or address literal")
)

// Split returns the local part and the domain of addr, split at its LAST
// "@": a quoted local part may hold an "@" (RFC 5321 §4.1.2, `"a@b"@c`),
// a domain never does. ok is false when addr has no "@".
func Split(addr string) (local, domain string, ok bool) {
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return addr, "", false
	}
	return addr[:at], addr[at+1:], true
}

// Parse returns addr in canonical form: the local part as written (it is
// case-sensitive, RFC 5321 §2.4; what go-smtp gives has no quotes), an
// "@", and the domain as Domain returns it. It fails for an address
// without local part or domain, or with a domain that is neither a host
// name nor an address literal. The null sender "" is not an address:
// callers take it before.
func Parse(addr string) (string, error) {
	local, domain, ok := Split(addr)
	if !ok || local == "" || domain == "" {
		return "", ErrNoDomain
	}
	d, err := Domain(domain)
	if err != nil {
		return "", err
	}
	return local + "@" + d, nil
}

// Domain returns d in canonical form, or ErrDomain when it is neither a
// host name nor an address literal:
//   - the root dot is dropped: "example.test." and "example.test" are one
//     name (RFC 1034 §3.1);
//   - ASCII is lower-cased: DNS names compare without case (RFC 4343);
//   - a name with U-labels becomes A-labels (RFC 5890 §2.3.2.1, IDNA2008
//     by golang.org/x/net/idna's lookup profile), the form DNS is asked in
//     and the one an admin may list, so "bücher.test" is
//     "xn--bcher-kva.test". Allowing non-ASCII at all is SMTPUTF8's
//     business (RFC 6531 §3.3), checked before.
//   - an address literal (RFC 5321 §4.1.3) is written as netip writes the
//     address: "[192.0.2.1]", "[IPv6:2001:db8::1]".
//
// ASCII names are not passed through IDNA: its hyphen rules refuse LDH
// names in use such as "r3---sn-x.example".
func Domain(d string) (string, error) {
	if strings.HasPrefix(d, "[") {
		return literal(d)
	}
	name := strings.TrimSuffix(d, ".")
	if IsASCII(name) {
		name = strings.ToLower(name)
	} else {
		var err error
		if name, err = idna.Lookup.ToASCII(name); err != nil {
			return "", fmt.Errorf("%w: %v", ErrDomain, err)
		}
	}
	if !IsHostname(name) {
		return "", ErrDomain
	}
	return name, nil
}

// literal checks and rewrites an address literal: "[IPv4]" or
// "[IPv6:addr]" (RFC 5321 §4.1.3).
func literal(d string) (string, error) {
	lit, ok := strings.CutSuffix(d[1:], "]")
	if !ok {
		return "", ErrDomain
	}
	if v6, ok := cutPrefixFold(lit, "IPv6:"); ok {
		a, err := netip.ParseAddr(v6)
		if err != nil || !a.Is6() || a.Zone() != "" {
			return "", ErrDomain
		}
		return "[IPv6:" + a.String() + "]", nil
	}
	a, err := netip.ParseAddr(lit)
	if err != nil || !a.Is4() {
		return "", ErrDomain
	}
	return "[" + a.String() + "]", nil
}

// cutPrefixFold is strings.CutPrefix without regard to ASCII case: the tag
// "IPv6" of an address literal is a keyword (RFC 5321 §2.4).
func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// DomainOf returns the canonical domain of addr, or "" when it has none:
// the null sender, no "@", or a domain Domain refuses.
func DomainOf(addr string) string {
	_, domain, ok := Split(addr)
	if !ok {
		return ""
	}
	d, err := Domain(domain)
	if err != nil {
		return ""
	}
	return d
}

// Fold returns the form in which a domain or domain pattern compares:
// Domain's canonical form, keeping a leading "*." (a pattern for the
// subdomains, as in [[route]] and the policy lists) and "*" itself. What
// Domain refuses is only lower-cased and loses its root dot. Fold is for
// input that cannot be refused any more, such as a spooled recipient queued
// by an older version or a HELO name; it is idempotent.
func Fold(d string) string {
	prefix, name := "", d
	if rest, ok := strings.CutPrefix(d, "*."); ok {
		prefix, name = "*.", rest
	}
	if c, err := Domain(name); err == nil {
		return prefix + c
	}
	return strings.TrimSuffix(strings.ToLower(d), ".")
}

// Pattern returns a domain pattern of the config (routes, overrides,
// lists) in canonical form: a host name, or "*.name" for the subdomains of
// name (not name itself). It fails as Domain does, and for an address
// literal, which names a host, not a domain mail is routed or listed by.
func Pattern(p string) (string, error) {
	rest, wild := strings.CutPrefix(p, "*.")
	d, err := Domain(rest)
	switch {
	case err != nil:
		return "", err
	case strings.HasPrefix(d, "["):
		return "", ErrDomain
	case wild:
		return "*." + d, nil
	}
	return d, nil
}

// Match reports whether the canonical domain d is matched by the canonical
// pattern p: the same name, or for "*.name" a subdomain of name.
func Match(p, d string) bool {
	if suffix, ok := strings.CutPrefix(p, "*"); ok {
		return strings.HasPrefix(suffix, ".") && len(d) > len(suffix) && strings.HasSuffix(d, suffix)
	}
	return p == d
}

// Equal reports whether a and b are the same mailbox as policy compares
// them: whether their Keys are the same.
func Equal(a, b string) bool { return Key(a) == Key(b) }

// Key is the one form in which an address names a mailbox that is looked
// up or kept: a list's owner, the recipient of an end user's link and of
// its revocations, a digest's recipient. It is the domain folded (Fold)
// and the local part with its ASCII letters in lower case; Equal compares
// Keys, so what is the same mailbox for access is the same key in every
// store.
//
// RFC 5321 §2.4 leaves the case of a local part to the destination but
// asks that it not be exploited: a list entry for "Boss@…" must not be
// dodged by writing "boss@…", and every server mailgate sits in front of
// folds ASCII. Other characters are kept as written: SMTPUTF8 (RFC 6531)
// defines no case mapping for a local part, and Unicode's is no one rule
// ("ſ" folds to "s"; "İ" lowers to "i" in Go, to "i̇" in full mapping,
// to itself in Turkish), so folding them could make two people's
// mailboxes one, and give one the other's quarantine.
func Key(addr string) string {
	local, domain, ok := Split(addr)
	if !ok {
		return asciiLower(addr)
	}
	return asciiLower(local) + "@" + Fold(domain)
}

// asciiLower is s with ASCII letters in lower case, and every other byte
// as it is (strings.ToLower maps non-ASCII too, and rewrites invalid
// UTF-8).
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// Identity is the form in which an address names a sender or recipient
// that is counted or remembered (greylisting triplets, rate-limit keys):
// its Key, with a BATV tag (prvs=TAG=local) dropped, since it changes with
// every message and would make each one a stranger.
func Identity(addr string) string {
	local, domain, ok := Split(Key(addr))
	if !ok {
		return local
	}
	if rest, ok := strings.CutPrefix(local, "prvs="); ok {
		if _, l, ok := strings.Cut(rest, "="); ok && l != "" {
			local = l
		}
	}
	return local + "@" + domain
}

// IsHostname reports whether d is a host name in ASCII: dot-separated
// labels of letters, digits and hyphens, neither starting nor ending with
// a hyphen, 1 to 63 octets each, 253 in all (RFC 1035 §2.3.1, with leading
// digits as RFC 1123 §2.1 allows). No root dot: see Domain.
func IsHostname(d string) bool {
	if d == "" || len(d) > maxDomain {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// HasControlOrSpace reports whether addr holds a control character or a
// space. Nothing in a mailbox may be a control character, and a space
// only inside quotes, which no mail a gateway relays needs; either would
// end up in header fields (Received "for") and in the MAIL and RCPT
// commands sent on, where it could smuggle parameters. The SMTP side
// refuses such an address from a client and the stages' edits from a
// plugin, by this one rule.
func HasControlOrSpace(addr string) bool {
	for i := 0; i < len(addr); i++ {
		if c := addr[i]; c <= ' ' || c == 0x7f {
			return true
		}
	}
	return false
}

// IsASCII reports whether s is all ASCII: an address that is not needs
// SMTPUTF8 (RFC 6531).
func IsASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
