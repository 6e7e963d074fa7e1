package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Result is an SPF result (RFC 7208 §2.6), as written in Received-SPF and
// Authentication-Results.
type Result string

const (
	None      Result = "none"
	Neutral   Result = "neutral"
	Pass      Result = "pass"
	Fail      Result = "fail"
	SoftFail  Result = "softfail"
	TempError Result = "temperror"
	PermError Result = "permerror"
)

// results lists every result, in the order the README gives them.
var results = [...]Result{Pass, Fail, SoftFail, Neutral, None, PermError, TempError}

// Results are the result words of the kind's verdicts: the SPF results.
func Results() []string {
	words := make([]string, len(results))
	for i, r := range results {
		words[i] = string(r)
	}
	return words
}

// Limits of §4.6.4.
const (
	maxLookups     = 10 // terms that cause DNS queries, per check
	maxVoidLookups = 2  // lookups that find nothing, per check
	maxAddrLookups = 10 // MX or PTR names looked up per mechanism
	maxDomainLen   = 253
)

// Outcome is what one check_host() evaluation found.
type Outcome struct {
	Result Result
	// Mechanism is the term that matched, or "default" when none did, for
	// Received-SPF's mechanism= key (§9.1); "" when no record was evaluated.
	Mechanism string
	// Problem says what went wrong for permerror, temperror and none.
	Problem string
	// Explanation is the expanded exp= text of a fail, "" if the record has
	// none or it could not be used (§6.2).
	Explanation string
}

// checkError ends an evaluation with temperror or permerror.
type checkError struct {
	result Result
	msg    string
}

func (e *checkError) Error() string { return e.msg }

func permErrorf(format string, args ...any) error {
	return &checkError{PermError, fmt.Sprintf(format, args...)}
}

func tempErrorf(format string, args ...any) error {
	return &checkError{TempError, fmt.Sprintf(format, args...)}
}

// checker holds the inputs of one check_host() evaluation (§4.1) and the
// counters its limits need; a checker is used once.
type checker struct {
	dns          *resolver.Resolver
	ip           netip.Addr // IPv4-mapped addresses unmapped (§5)
	local        string     // local-part of the sender, "postmaster" if empty
	senderDomain string
	helo         string
	receiver     string
	now          time.Time

	lookups int
	voids   int
}

// result is check_host()'s answer for one domain, with the exp= of the
// record that produced it: only that record's explanation may be used
// (§6.2: include never passes one up, redirect replaces it).
type result struct {
	result    Result
	mechanism string
	exp       macroString
	expDomain string
}

// check evaluates the SPF policy of the sender's domain for ip. sender is
// "local@domain"; for the HELO identity (and the null sender) the caller
// passes "postmaster@<helo>" (§2.3, §2.4).
func check(ctx context.Context, r *resolver.Resolver, ip netip.Addr, sender, helo, receiver string, now time.Time) Outcome {
	// The sender comes in canonical form (package address); the HELO
	// name is folded the same way: no root dot, A-labels as DNS is asked.
	local, domain, ok := address.Split(sender)
	domain = address.Fold(domain)
	if local == "" {
		local = "postmaster" // §4.3
	}
	if !ok || !validDomain(domain) {
		// §4.3: a malformed or single-label domain has no policy.
		return Outcome{Result: None, Problem: fmt.Sprintf("%q is not a domain name", domain)}
	}
	c := &checker{dns: r, ip: ip.Unmap(), local: local, senderDomain: domain, helo: helo, receiver: receiver, now: now}
	res, err := c.checkHost(ctx, domain)
	if err != nil {
		var ce *checkError
		if !errors.As(err, &ce) {
			ce = &checkError{TempError, err.Error()}
		}
		return Outcome{Result: ce.result, Problem: ce.msg}
	}
	o := Outcome{Result: res.result, Mechanism: res.mechanism}
	if res.result == None {
		o.Problem = "no SPF record for " + domain
	}
	if res.result == Fail && res.exp != nil {
		o.Explanation = c.explain(ctx, res.exp, res.expDomain)
	}
	return o
}

// validDomain applies §4.3's test of <domain>: labels of 1 to 63 octets, at
// least two of them, 253 octets at most, and not an address literal.
func validDomain(d string) bool {
	if d == "" || len(d) > maxDomainLen || d[0] == '[' {
		return false
	}
	labels := strings.Split(d, ".")
	for _, l := range labels {
		if l == "" || len(l) > 63 {
			return false
		}
	}
	return len(labels) >= 2
}

// checkHost is check_host() (§4) for one domain.
func (c *checker) checkHost(ctx context.Context, domain string) (result, error) {
	if !validDomain(domain) {
		return result{result: None}, nil
	}
	rec, err := c.record(ctx, domain)
	if err != nil || rec == nil {
		return result{result: None}, err
	}
	for _, m := range rec.terms {
		match, err := c.match(ctx, m, domain)
		if err != nil {
			return result{}, err
		}
		if match {
			return result{result: m.qual, mechanism: m.text, exp: rec.exp, expDomain: domain}, nil
		}
	}
	if rec.redirect == nil {
		return result{result: Neutral, mechanism: "default", exp: rec.exp, expDomain: domain}, nil // §4.7
	}
	// §6.1: redirect applies only when no mechanism matched; the result
	// is the target's, and a target without a record is a permerror.
	if err := c.countLookup(); err != nil {
		return result{}, err
	}
	target := c.expandDomain(ctx, rec.redirect, domain)
	res, err := c.checkHost(ctx, target)
	if err == nil && res.result == None {
		return result{}, permErrorf("redirect=%s: no SPF record", target)
	}
	return res, err
}

// record fetches and parses the SPF record of domain (§4.4, §4.5); nil
// without error means there is none.
func (c *checker) record(ctx context.Context, domain string) (*record, error) {
	a, err := c.lookup(ctx, domain, dns.TypeTXT)
	if errors.Is(err, resolver.ErrBadName) {
		return nil, nil
	}
	if err != nil {
		return nil, tempErrorf("TXT lookup of %s: %v", domain, err)
	}
	var spf []string
	for _, rr := range a.RRs {
		// Character-strings are joined with nothing in between (§3.3).
		if txt := strings.Join(resolver.TXTStrings(rr), ""); isSPF(txt) {
			spf = append(spf, txt)
		}
	}
	switch len(spf) {
	case 0:
		return nil, nil
	case 1:
	default:
		return nil, permErrorf("%s has %d SPF records", domain, len(spf))
	}
	rec, err := parseRecord(spf[0])
	if err != nil {
		return nil, permErrorf("SPF record of %s: %v", domain, err)
	}
	return rec, nil
}

// match evaluates one mechanism (§5).
func (c *checker) match(ctx context.Context, m mechanism, domain string) (bool, error) {
	switch m.kind {
	case "all":
		return true, nil
	case "ip4", "ip6":
		return m.net.Addr().Is4() == c.ip.Is4() && m.net.Contains(c.ip), nil
	}
	// Every other mechanism causes DNS queries and counts (§4.6.4).
	if err := c.countLookup(); err != nil {
		return false, err
	}
	target := domain
	if m.domain != nil {
		target = c.expandDomain(ctx, m.domain, domain)
	}
	switch m.kind {
	case "include":
		res, err := c.checkHost(ctx, target)
		if err != nil {
			return false, err
		}
		// §5.2: only a pass matches; none is a permerror.
		switch res.result {
		case Pass:
			return true, nil
		case None:
			return false, permErrorf("include:%s: no SPF record", target)
		}
		return false, nil
	case "a":
		addrs, err := c.addrs(ctx, target, true)
		return c.inAny(addrs, m), err
	case "mx":
		return c.matchMX(ctx, target, m)
	case "ptr":
		return c.matchPTR(ctx, target)
	case "exists":
		// §5.7: always an A query, whatever the client's address family.
		a, err := c.lookup(ctx, target, dns.TypeA)
		if err != nil {
			return false, c.lookupError(err, target)
		}
		if a.Empty() {
			return false, c.countVoid()
		}
		return true, nil
	}
	return false, permErrorf("unknown mechanism %q", m.kind)
}

func (c *checker) matchMX(ctx context.Context, target string, m mechanism) (bool, error) {
	a, err := c.lookup(ctx, target, dns.TypeMX)
	if err != nil {
		return false, c.lookupError(err, target)
	}
	if a.Empty() {
		return false, c.countVoid()
	}
	// §4.6.4: more than 10 MX names is a permerror.
	if len(a.RRs) > maxAddrLookups {
		return false, permErrorf("mx:%s: %d MX records, more than %d", target, len(a.RRs), maxAddrLookups)
	}
	for _, rr := range a.RRs {
		host := strings.TrimSuffix(rr.(*dns.MX).Mx, ".")
		if host == "" {
			continue // a null MX (RFC 7505) names no host
		}
		addrs, err := c.addrs(ctx, unescapeName(host), false)
		if err != nil {
			return false, err
		}
		if c.inAny(addrs, m) {
			return true, nil
		}
	}
	return false, nil
}

// matchPTR is the ptr mechanism (§5.5): a validated name of the client that
// is target or below it.
func (c *checker) matchPTR(ctx context.Context, target string) (bool, error) {
	names, void := c.ptrNames(ctx)
	if void {
		return false, c.countVoid()
	}
	for _, n := range names {
		if inDomain(n, target) && c.validates(ctx, n) {
			return true, nil
		}
	}
	return false, nil
}

// ptrNames returns the first 10 names the client's reverse zone gives
// (§4.6.4), and whether the lookup was void (NXDOMAIN or no data). A DNS
// error gives no names: ptr then does not match (§5.5).
func (c *checker) ptrNames(ctx context.Context) (names []string, void bool) {
	rev, err := dns.ReverseAddr(c.ip.String())
	if err != nil {
		return nil, false
	}
	a, err := c.dns.Lookup(ctx, rev, dns.TypePTR)
	if err != nil {
		return nil, false
	}
	for _, rr := range a.RRs[:min(len(a.RRs), maxAddrLookups)] {
		names = append(names, unescapeName(strings.TrimSuffix(rr.(*dns.PTR).Ptr, ".")))
	}
	return names, a.Empty()
}

// validates reports whether name has an address record for the client; a
// DNS error skips the name (§5.5).
func (c *checker) validates(ctx context.Context, name string) bool {
	addrs, err := c.addrs(ctx, name, false)
	if err != nil {
		return false
	}
	for _, a := range addrs {
		if a == c.ip {
			return true
		}
	}
	return false
}

// validatedName is the "p" macro (§7.3): a validated name of the client,
// preferring domain itself, then a name below it; "unknown" if none.
func (c *checker) validatedName(ctx context.Context, domain string) string {
	names, _ := c.ptrNames(ctx)
	var sub, other string
	for _, n := range names {
		if !c.validates(ctx, n) {
			continue
		}
		switch {
		case strings.EqualFold(n, domain):
			return n
		case inDomain(n, domain) && sub == "":
			sub = n
		case other == "":
			other = n
		}
	}
	switch {
	case sub != "":
		return sub
	case other != "":
		return other
	}
	return "unknown"
}

// addrs looks up the addresses of name in the client's family. A name
// that cannot be queried matches nothing; voids count when asked.
func (c *checker) addrs(ctx context.Context, name string, countVoid bool) ([]netip.Addr, error) {
	qtype := dns.TypeAAAA
	if c.ip.Is4() {
		qtype = dns.TypeA
	}
	a, err := c.lookup(ctx, name, qtype)
	if err != nil {
		return nil, c.lookupError(err, name)
	}
	if a.Empty() && countVoid {
		return nil, c.countVoid()
	}
	var addrs []netip.Addr
	for _, rr := range a.RRs {
		switch v := rr.(type) {
		case *dns.A:
			if ip, ok := netip.AddrFromSlice(v.A.To4()); ok {
				addrs = append(addrs, ip)
			}
		case *dns.AAAA:
			if ip, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
				addrs = append(addrs, ip)
			}
		}
	}
	return addrs, nil
}

// inAny reports whether the client is within the mechanism's prefix
// length of one of addrs (§5.3, §5.4).
func (c *checker) inAny(addrs []netip.Addr, m mechanism) bool {
	bits := m.cidr6
	if c.ip.Is4() {
		bits = m.cidr4
	}
	for _, a := range addrs {
		if a.Is4() != c.ip.Is4() {
			continue
		}
		if p, err := a.Prefix(bits); err == nil && p.Contains(c.ip) {
			return true
		}
	}
	return false
}

// lookupError turns a failed lookup into the result §5 asks for: a name
// that cannot be queried matches nothing, any other failure is temperror.
func (c *checker) lookupError(err error, name string) error {
	if errors.Is(err, resolver.ErrBadName) {
		return nil
	}
	return tempErrorf("lookup of %s: %v", name, err)
}

func (c *checker) countLookup() error {
	c.lookups++
	if c.lookups > maxLookups {
		return permErrorf("more than %d DNS-querying terms", maxLookups)
	}
	return nil
}

func (c *checker) countVoid() error {
	c.voids++
	if c.voids > maxVoidLookups {
		return permErrorf("more than %d void lookups", maxVoidLookups)
	}
	return nil
}

// lookup queries name, given as plain text, in the form miekg/dns wants.
func (c *checker) lookup(ctx context.Context, name string, qtype uint16) (resolver.Answer, error) {
	return c.dns.Lookup(ctx, escapeName(name), qtype)
}

// expandDomain expands a domain-spec into a target name: no trailing dot,
// and cut from the left by whole labels to 253 octets (§7.3).
func (c *checker) expandDomain(ctx context.Context, ms macroString, domain string) string {
	name := strings.TrimSuffix(c.expand(ctx, ms, domain), ".")
	for len(name) > maxDomainLen {
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return name
}

// explain fetches and expands the exp= explanation of a fail (§6.2). Any
// problem means no explanation, and none of its lookups count against the
// limits.
func (c *checker) explain(ctx context.Context, exp macroString, domain string) string {
	a, err := c.lookup(ctx, c.expandDomain(ctx, exp, domain), dns.TypeTXT)
	if err != nil || len(a.RRs) != 1 {
		return ""
	}
	ms, err := parseMacro(strings.Join(resolver.TXTStrings(a.RRs[0]), ""), true)
	if err != nil {
		return ""
	}
	return c.expand(ctx, ms, domain)
}

// inDomain reports whether name is domain or a name below it, ignoring case.
func inDomain(name, domain string) bool {
	name, domain = strings.ToLower(name), strings.ToLower(domain)
	return name == domain || strings.HasSuffix(name, "."+domain)
}

// escapeName writes a plain-text name in miekg/dns's presentation form:
// a backslash and the bytes outside printable ASCII become escapes, so any
// octet a macro produced reaches the wire as itself.
func escapeName(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch ch := s[i]; {
		case ch == '\\':
			b.WriteString(`\\`)
		case ch <= ' ' || ch > '~':
			fmt.Fprintf(&b, `\%03d`, ch)
		default:
			b.WriteByte(ch)
		}
	}
	return b.String()
}

// unescapeName undoes miekg/dns's escapes in a name taken from an answer.
func unescapeName(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) && allDigits(s[i+1:i+4]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n <= 0xff {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		if s[i] == '\\' && i+1 < len(s) {
			i++
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
