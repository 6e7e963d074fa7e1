package dmarc

import (
	"bufio"
	"fmt"
	"io"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"

	"github.com/mailgate/mailgate/stages/address"
)

// OrgDomainer finds the Organizational Domain of a domain (RFC 7489 §3.2).
// It is an interface so that DMARCbis's DNS tree walk, which replaces the
// Public Suffix List, can take the place of the list-based ones here.
type OrgDomainer interface {
	// OrgDomain returns the Organizational Domain of domain (canonical:
	// lower-case A-labels, no root dot), or ok false when there is none:
	// the domain is a public suffix itself, or not a domain name.
	OrgDomain(domain string) (org string, ok bool)
}

// PSL is the Public Suffix List built into golang.org/x/net/publicsuffix.
type PSL struct{}

// OrgDomain implements OrgDomainer. U-labels are turned into A-labels
// first: publicsuffix matches A-labels only.
func (PSL) OrgDomain(domain string) (string, bool) {
	d, ok := canonicalDomain(domain)
	if !ok {
		return "", false
	}
	org, err := publicsuffix.EffectiveTLDPlusOne(d)
	if err != nil {
		return "", false
	}
	return org, true
}

// canonicalDomain returns domain in lower-case A-labels, or false if it is
// not a host name (empty labels, a leading dot, an address literal).
func canonicalDomain(domain string) (string, bool) {
	if strings.HasPrefix(domain, ".") || strings.HasPrefix(domain, "[") {
		return "", false
	}
	d, err := address.Domain(domain)
	if err != nil || d == "" {
		return "", false
	}
	return d, true
}

// List is a Public Suffix List read from its file format
// (public_suffix_list.dat): for a site that wants a newer list than the
// one built in, and for tests that must not depend on the x/net version.
type List struct {
	rules map[string]byte // A-label rule without "*." or "!" → ruleNormal, ruleWild, ruleExcept
}

const (
	ruleNormal = 1 << iota
	ruleWild
	ruleExcept
)

// ReadList reads a list in the format of publicsuffix.org/list: one rule a
// line (its first word), "//" comments, "*." wildcards, "!" exceptions;
// ICANN and private sections alike.
func ReadList(r io.Reader) (*List, error) {
	l := &List{rules: map[string]byte{}}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "//") {
			continue
		}
		rule := strings.Fields(line)[0]
		kind := byte(ruleNormal)
		if rest, ok := strings.CutPrefix(rule, "!"); ok {
			rule, kind = rest, ruleExcept
		} else if rest, ok := strings.CutPrefix(rule, "*."); ok {
			rule, kind = rest, ruleWild
		}
		a, err := idna.Lookup.ToASCII(rule)
		if err != nil {
			// A rule IDNA refuses can match no canonical domain.
			continue
		}
		l.rules[strings.ToLower(a)] |= kind
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("public suffix list: %w", err)
	}
	if len(l.rules) == 0 {
		return nil, fmt.Errorf("public suffix list: no rules")
	}
	return l, nil
}

// OrgDomain implements OrgDomainer with the list's algorithm
// (publicsuffix.org/list "Algorithm"): the longest matching rule, an
// exception rule removing its leftmost label, "*" when none matches; the
// registrable domain is the public suffix plus one label.
func (l *List) OrgDomain(domain string) (string, bool) {
	d, ok := canonicalDomain(domain)
	if !ok {
		return "", false
	}
	labels := strings.Split(d, ".")
	suffix := 1 // labels in the public suffix; the implicit "*" rule
	for i := range labels {
		name := strings.Join(labels[i:], ".")
		if l.rules[name]&ruleExcept != 0 {
			suffix = len(labels) - i - 1
			break
		}
		if l.rules[name]&ruleNormal != 0 {
			suffix = len(labels) - i
			break
		}
		if i+1 < len(labels) && l.rules[strings.Join(labels[i+1:], ".")]&ruleWild != 0 {
			suffix = len(labels) - i
			break
		}
	}
	if suffix >= len(labels) {
		return "", false
	}
	return strings.Join(labels[len(labels)-suffix-1:], "."), true
}
