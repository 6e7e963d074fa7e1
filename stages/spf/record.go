package spf

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// record is a parsed SPF record (RFC 7208 §4.6, §12).
type record struct {
	terms    []mechanism
	redirect macroString // redirect= domain-spec, nil if absent
	exp      macroString // exp= domain-spec, nil if absent
}

// mechanism is one directive: qualifier and mechanism (§4.6.2, §5).
type mechanism struct {
	text   string // as written, for Received-SPF's mechanism= key
	qual   Result
	kind   string      // all, include, a, mx, ptr, ip4, ip6 or exists
	domain macroString // target domain-spec; nil means the current domain
	cidr4  int         // a, mx: prefix length for IPv4 (§5.3, §5.4)
	cidr6  int         // a, mx: prefix length for IPv6
	net    netip.Prefix
}

// isSPF reports whether a TXT record is an SPF version 1 record: "v=spf1"
// in any case, then a space or the end (§4.5).
func isSPF(txt string) bool {
	return len(txt) >= 6 && strings.EqualFold(txt[:6], "v=spf1") && (len(txt) == 6 || txt[6] == ' ')
}

// parseRecord parses a whole SPF record. Any syntax error anywhere is an
// error, whatever would be evaluated first (§4.6).
func parseRecord(txt string) (*record, error) {
	if !isSPF(txt) {
		return nil, errors.New("not an SPF record")
	}
	for i := 0; i < len(txt); i++ {
		// The grammar allows nothing but printable US-ASCII and SP
		// (§3.1, §12): no tab, no control character, no 8-bit byte.
		if txt[i] < 0x20 || txt[i] > 0x7e {
			return nil, fmt.Errorf("invalid character %q in the record", txt[i])
		}
	}
	rec := &record{}
	for _, t := range strings.Split(txt[6:], " ") {
		if t == "" {
			continue // terms are separated by one or more spaces
		}
		if name, value, ok := modifier(t); ok {
			if err := rec.addModifier(name, value); err != nil {
				return nil, fmt.Errorf("%q: %w", t, err)
			}
			continue
		}
		m, err := parseMechanism(t)
		if err != nil {
			return nil, fmt.Errorf("%q: %w", t, err)
		}
		rec.terms = append(rec.terms, m)
	}
	return rec, nil
}

// modifier splits a term of the form name "=" value, where name = ALPHA
// *( ALPHA / DIGIT / "-" / "_" / "." ) (§4.6.1). Anything else is a
// mechanism or an error.
func modifier(t string) (name, value string, ok bool) {
	name, value, ok = strings.Cut(t, "=")
	if !ok || name == "" || !isAlpha(name[0]) {
		return "", "", false
	}
	for i := 1; i < len(name); i++ {
		if c := name[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' && c != '.' {
			return "", "", false
		}
	}
	return name, value, true
}

func (rec *record) addModifier(name, value string) error {
	switch strings.ToLower(name) {
	case "redirect", "exp":
		// §6: each may appear at most once.
		dst := &rec.redirect
		if strings.EqualFold(name, "exp") {
			dst = &rec.exp
		}
		if *dst != nil {
			return errors.New("modifier appears twice")
		}
		ds, err := parseDomainSpec(value)
		if err != nil {
			return err
		}
		*dst = ds
		return nil
	}
	// Unknown modifiers are ignored (§6), but their value must still be a
	// macro-string (§12).
	_, err := parseMacro(value, true)
	return err
}

func parseMechanism(t string) (mechanism, error) {
	m := mechanism{text: t, qual: Pass, cidr4: 32, cidr6: 128}
	rest := t
	if q, ok := qualifier(t[0]); ok {
		m.qual, rest = q, t[1:]
	}
	end := strings.IndexAny(rest, ":/")
	if end < 0 {
		end = len(rest)
	}
	m.kind, rest = strings.ToLower(rest[:end]), rest[end:]
	var err error
	switch m.kind {
	case "all":
		if rest != "" {
			return m, errors.New("all takes no argument")
		}
	case "include", "exists":
		// include = "include" ":" domain-spec (§5.2, §5.7)
		spec, ok := strings.CutPrefix(rest, ":")
		if !ok {
			return m, errors.New("missing domain")
		}
		m.domain, err = parseDomainSpec(spec)
	case "a", "mx":
		// "a" [ ":" domain-spec ] [ dual-cidr-length ] (§5.3, §5.4)
		spec, cidr := splitDualCIDR(rest)
		if spec != "" {
			s, ok := strings.CutPrefix(spec, ":")
			if !ok {
				return m, errors.New("invalid prefix length")
			}
			if m.domain, err = parseDomainSpec(s); err != nil {
				return m, err
			}
		}
		m.cidr4, m.cidr6, err = parseDualCIDR(cidr)
	case "ptr":
		// "ptr" [ ":" domain-spec ] (§5.5)
		if rest != "" {
			s, ok := strings.CutPrefix(rest, ":")
			if !ok {
				return m, errors.New("ptr takes no prefix length")
			}
			m.domain, err = parseDomainSpec(s)
		}
	case "ip4", "ip6":
		m.net, err = parseNetwork(m.kind, rest)
	default:
		return m, errors.New("unknown mechanism")
	}
	return m, err
}

// qualifier maps a qualifier character to its result (§4.6.2).
func qualifier(c byte) (Result, bool) {
	switch c {
	case '+':
		return Pass, true
	case '-':
		return Fail, true
	case '~':
		return SoftFail, true
	case '?':
		return Neutral, true
	}
	return "", false
}

// splitDualCIDR splits "[:domain-spec][/n][//n]" into the domain part and
// the prefix lengths, taking the lengths from the end so that a domain-spec
// may itself contain '/' (§7.1 allows it).
func splitDualCIDR(s string) (spec, cidr string) {
	end := len(s)
	// ip6-cidr-length = "/" ("0" / %x31-39 0*2DIGIT), written after a
	// second slash.
	if i := strings.LastIndex(s[:end], "//"); i >= 0 && allDigits(s[i+2:end]) {
		end = i
	}
	if i := strings.LastIndexByte(s[:end], '/'); i >= 0 && allDigits(s[i+1:end]) {
		end = i
	}
	return s[:end], s[end:]
}

// parseDualCIDR parses what splitDualCIDR left: "", "/n", "//n" or "/n//n".
func parseDualCIDR(s string) (cidr4, cidr6 int, err error) {
	cidr4, cidr6 = 32, 128
	v4, v6, dual := strings.Cut(s, "//")
	if v4 != "" {
		if cidr4, err = prefixLen(strings.TrimPrefix(v4, "/"), 32); err != nil {
			return 0, 0, err
		}
	}
	if dual {
		if cidr6, err = prefixLen(v6, 128); err != nil {
			return 0, 0, err
		}
	}
	return cidr4, cidr6, nil
}

// prefixLen parses a prefix length: no sign, no leading zero (the ABNF
// spells it "0" / %x31-39 0*1DIGIT), at most max.
func prefixLen(s string, max int) (int, error) {
	if s == "" || !allDigits(s) || len(s) > 1 && s[0] == '0' {
		return 0, fmt.Errorf("invalid prefix length %q", s)
	}
	n, err := strconv.Atoi(s)
	if err != nil || n > max {
		return 0, fmt.Errorf("prefix length %q above %d", s, max)
	}
	return n, nil
}

// parseNetwork parses ":" address [ "/" length ] of ip4 and ip6 (§5.6).
func parseNetwork(kind, s string) (netip.Prefix, error) {
	s, ok := strings.CutPrefix(s, ":")
	if !ok {
		return netip.Prefix{}, errors.New("missing address")
	}
	addr, length, hasLen := strings.Cut(s, "/")
	ip, err := netip.ParseAddr(addr)
	if err != nil || ip.Zone() != "" {
		return netip.Prefix{}, fmt.Errorf("invalid address %q", addr)
	}
	bits := 32
	if kind == "ip6" {
		bits = 128
	}
	if ip.Is4() != (kind == "ip4") {
		return netip.Prefix{}, fmt.Errorf("%q is not an %s address", addr, kind)
	}
	if hasLen {
		if bits, err = prefixLen(length, bits); err != nil {
			return netip.Prefix{}, err
		}
	}
	return netip.PrefixFrom(ip, bits).Masked(), nil
}

// parseDomainSpec parses domain-spec = macro-string domain-end, where
// domain-end = ( "." toplabel [ "." ] ) / macro-expand (§7.1).
func parseDomainSpec(s string) (macroString, error) {
	if s == "" {
		return nil, errors.New("empty domain")
	}
	ms, err := parseMacro(s, false)
	if err != nil {
		return nil, err
	}
	last := ms[len(ms)-1]
	if last.expand {
		return ms, nil
	}
	tail := strings.TrimSuffix(last.literal, ".")
	dot := strings.LastIndexByte(tail, '.')
	if dot < 0 || !isTopLabel(tail[dot+1:]) {
		return nil, fmt.Errorf("%q does not end in a top-level domain", s)
	}
	return ms, nil
}

// isTopLabel checks toplabel = ( *alphanum ALPHA *alphanum ) /
// ( 1*alphanum "-" *( alphanum / "-" ) alphanum ): an all-numeric label
// would be an IP address written where a domain belongs.
func isTopLabel(l string) bool {
	if l == "" || !isAlnum(l[0]) || !isAlnum(l[len(l)-1]) {
		return false
	}
	alpha := false
	for i := 0; i < len(l); i++ {
		switch c := l[i]; {
		case isAlpha(c), c == '-':
			alpha = true
		case !isDigit(c):
			return false
		}
	}
	return alpha
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return s != ""
}

func isAlpha(c byte) bool { return 'a' <= c|0x20 && c|0x20 <= 'z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }
func isAlnum(c byte) bool { return isAlpha(c) || isDigit(c) }
