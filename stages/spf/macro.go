package spf

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// maxExpansion bounds the text one macro-string may expand to. Domains are
// cut to 253 octets anyway and explanations are one reply line; the bound
// only stops a hostile record from growing memory.
const maxExpansion = 4096

// delimiters are the characters a macro may split its value on (§7.1).
const delimiters = ".-+,/_="

// macroString is a parsed macro-string (RFC 7208 §7.1): literal text and
// macro expansions, in order.
type macroString []macroPart

// macroPart is literal text (letter 0) or one macro-expand.
type macroPart struct {
	literal string
	// expand is true for every macro-expand, including "%%", "%_" and
	// "%-" (which become literal text), as the domain-end rule needs it.
	expand  bool
	letter  byte   // lower-case macro letter; 0 for literal text
	upper   bool   // an upper-case letter: URL-escape the value (§7.3)
	digits  int    // keep this many right-hand parts; 0 keeps all
	reverse bool   // the "r" transformer
	delims  string // characters to split on; "" means "."
}

// parseMacro parses a macro-string. explain selects the explain-string
// grammar of an exp= TXT record (§6.2): spaces allowed, and the letters c,
// r and t, which only explanation text may use (§7.1).
func parseMacro(s string, explain bool) (macroString, error) {
	var ms macroString
	addLiteral := func(text string) {
		if n := len(ms); n > 0 && !ms[n-1].expand {
			ms[n-1].literal += text
			return
		}
		ms = append(ms, macroPart{literal: text})
	}
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if ch != '%' {
			// macro-literal = %x21-24 / %x26-7E (§7.1); explain-string
			// adds SP.
			if ch < 0x21 && !(explain && ch == ' ') || ch > 0x7e {
				return nil, fmt.Errorf("invalid character %q", ch)
			}
			addLiteral(string(ch))
			continue
		}
		if i+1 == len(s) {
			return nil, errors.New("'%' at the end")
		}
		i++
		switch s[i] {
		case '%':
			ms = append(ms, macroPart{literal: "%", expand: true})
		case '_':
			ms = append(ms, macroPart{literal: " ", expand: true})
		case '-':
			ms = append(ms, macroPart{literal: "%20", expand: true})
		case '{':
			end := strings.IndexByte(s[i:], '}')
			if end < 0 {
				return nil, errors.New("unterminated macro")
			}
			p, err := parseExpand(s[i+1:i+end], explain)
			if err != nil {
				return nil, err
			}
			ms = append(ms, p)
			i += end
		default:
			// §7.1: a '%' not followed by '{', '%', '-' or '_' is a
			// syntax error.
			return nil, fmt.Errorf("'%%' followed by %q", s[i])
		}
	}
	return ms, nil
}

// parseExpand parses the inside of "%{...}": macro-letter transformers
// *delimiter.
func parseExpand(s string, explain bool) (macroPart, error) {
	if s == "" {
		return macroPart{}, errors.New("empty macro")
	}
	p := macroPart{expand: true}
	l := s[0]
	p.letter = l | 0x20
	p.upper = 'A' <= l && l <= 'Z'
	switch p.letter {
	case 's', 'l', 'o', 'd', 'i', 'p', 'h', 'v':
	case 'c', 'r', 't':
		if !explain {
			return macroPart{}, fmt.Errorf("macro letter %q is only allowed in explanations", l)
		}
	default:
		return macroPart{}, fmt.Errorf("unknown macro letter %q", l)
	}
	i := 1
	if i < len(s) && '0' <= s[i] && s[i] <= '9' {
		// More parts than a name can have keeps them all; saturating
		// stops a long run of digits from overflowing.
		for ; i < len(s) && '0' <= s[i] && s[i] <= '9'; i++ {
			p.digits = min(p.digits*10+int(s[i]-'0'), 1000)
		}
		if p.digits == 0 {
			// §7.3: the DIGIT transformer must be non-zero.
			return macroPart{}, errors.New("zero transformer")
		}
	}
	if i < len(s) && (s[i] == 'r' || s[i] == 'R') {
		p.reverse = true
		i++
	}
	p.delims = s[i:]
	for j := i; j < len(s); j++ {
		if !strings.ContainsRune(delimiters, rune(s[j])) {
			return macroPart{}, fmt.Errorf("invalid delimiter %q", s[j])
		}
	}
	return p, nil
}

// expand expands ms for the check of domain (§7.3).
func (c *checker) expand(ctx context.Context, ms macroString, domain string) string {
	var b strings.Builder
	for _, p := range ms {
		v := p.literal
		if p.letter != 0 {
			v = transform(c.macroValue(ctx, p.letter, domain), p)
			if p.upper {
				v = urlEscape(v)
			}
		}
		if b.Len()+len(v) > maxExpansion {
			break
		}
		b.WriteString(v)
	}
	return b.String()
}

func (c *checker) macroValue(ctx context.Context, letter byte, domain string) string {
	switch letter {
	case 's':
		return c.local + "@" + c.senderDomain
	case 'l':
		return c.local
	case 'o':
		return c.senderDomain
	case 'd':
		return domain
	case 'i':
		return dottedIP(c.ip)
	case 'p':
		return c.validatedName(ctx, domain)
	case 'v':
		if c.ip.Is4() {
			return "in-addr"
		}
		return "ip6"
	case 'h':
		return c.helo
	case 'c':
		return c.ip.String()
	case 'r':
		if c.receiver == "" {
			return "unknown"
		}
		return c.receiver
	case 't':
		return strconv.FormatInt(c.now.Unix(), 10)
	}
	return ""
}

// dottedIP is the "i" macro: dotted quad for IPv4, dot-separated nibbles
// for IPv6 (§7.3).
func dottedIP(ip netip.Addr) string {
	if ip.Is4() {
		return ip.String()
	}
	const hex = "0123456789abcdef"
	b := make([]byte, 0, 63)
	for _, x := range ip.As16() {
		if len(b) > 0 {
			b = append(b, '.')
		}
		b = append(b, hex[x>>4], '.', hex[x&0xf])
	}
	return string(b)
}

// transform splits v on the delimiters, reverses the parts if asked, keeps
// the right-hand ones and joins them with dots (§7.3).
func transform(v string, p macroPart) string {
	if p.digits == 0 && !p.reverse && (p.delims == "" || p.delims == ".") {
		return v
	}
	delims := p.delims
	if delims == "" {
		delims = "."
	}
	parts := splitAny(v, delims)
	if p.reverse {
		for i, j := 0, len(parts)-1; i < j; i, j = i+1, j-1 {
			parts[i], parts[j] = parts[j], parts[i]
		}
	}
	if p.digits > 0 && p.digits < len(parts) {
		parts = parts[len(parts)-p.digits:]
	}
	return strings.Join(parts, ".")
}

func splitAny(s, delims string) []string {
	var parts []string
	start := 0
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(delims, s[i]) >= 0 {
			parts = append(parts, s[start:i])
			start = i + 1
		}
	}
	return append(parts, s[start:])
}

// urlEscape escapes every character outside the URI unreserved set, as
// upper-case macro letters ask (§7.3, RFC 3986 §2.3).
func urlEscape(s string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		ch := s[i]
		if 'a' <= ch && ch <= 'z' || 'A' <= ch && ch <= 'Z' || '0' <= ch && ch <= '9' ||
			ch == '-' || ch == '.' || ch == '_' || ch == '~' {
			b.WriteByte(ch)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[ch>>4])
		b.WriteByte(hex[ch&0xf])
	}
	return b.String()
}
