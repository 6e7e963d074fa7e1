package resolver

import (
	"strings"

	"github.com/miekg/dns"
)

// TXTStrings returns the character-strings of a TXT or SPF record as the
// bytes that were on the wire, or nil for other records. miekg/dns keeps
// them in presentation form, with \" \\ and \DDD escapes, which would
// otherwise leak into SPF records and DNSBL reasons.
func TXTStrings(rr dns.RR) []string {
	var in []string
	switch v := rr.(type) {
	case *dns.TXT:
		in = v.Txt
	case *dns.SPF:
		in = v.Txt
	default:
		return nil
	}
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = unescape(s)
	}
	return out
}

func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 == len(s) {
			b.WriteByte(s[i])
			continue
		}
		if i+3 < len(s) && isDigit(s[i+1]) && isDigit(s[i+2]) && isDigit(s[i+3]) {
			if n := int(s[i+1]-'0')*100 + int(s[i+2]-'0')*10 + int(s[i+3]-'0'); n <= 255 {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i+1])
		i++
	}
	return b.String()
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
