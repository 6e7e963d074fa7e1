package authres

import (
	"slices"
	"strconv"
	"strings"
	"unicode"
)

// Format writes results as resinfo entries joined by "; ", without an
// authserv-id: the form of a stage's reason, which ParseResults reads
// back. Each entry is "method=result", then reason= when there is one,
// then the properties with a value, in the order of their keys (as
// go-msgauth and OpenDKIM write them).
//
// Values are made safe to write, whatever they hold: control characters
// and invalid UTF-8 are dropped, a tab becomes a space, and a value is
// quoted, with '"' and '\' escaped, unless it can stand bare (see
// formatPvalue and quoteValue). A property value over maxPvalue octets is
// left out: no domain, address or token is that long, and a longer one,
// copied from a message, would make a line no fold can break. The method,
// result and property keys are written as they are: they are the
// caller's own words or what Parse read as keywords.
func Format(results ...Result) string {
	parts := make([]string, len(results))
	for i, r := range results {
		parts[i] = formatResult(r)
	}
	return strings.Join(parts, "; ")
}

// FormatField writes an Authentication-Results value: the authserv-id,
// then the results, or "none" when there are none (RFC 8601 §2.2).
func FormatField(authservID string, results ...Result) string {
	id := quoteValue(text(authservID))
	if len(results) == 0 {
		return id + "; none"
	}
	return id + "; " + Format(results...)
}

// maxPvalue bounds a property value: a domain name has at most 255 octets
// (RFC 1035 §2.3.4), an address at most 254 (RFC 5321 §4.5.3.1.3, a path
// of 256 with its brackets).
const maxPvalue = 255

func formatResult(r Result) string {
	var b strings.Builder
	b.WriteString(r.Method)
	if r.MethodVersion > 1 {
		b.WriteString("/" + strconv.Itoa(r.MethodVersion))
	}
	b.WriteString("=" + r.Value)
	if v := text(r.Reason); v != "" {
		b.WriteString(" reason=" + quoteValue(v))
	}
	props := slices.Clone(r.Props)
	slices.SortStableFunc(props, func(a, b Prop) int { return strings.Compare(a.Key, b.Key) })
	for _, p := range props {
		if v := text(p.Value); v != "" && len(v) <= maxPvalue {
			b.WriteString(" " + p.Key + "=" + formatPvalue(v))
		}
	}
	return b.String()
}

// text keeps what a header field can carry of s: valid UTF-8 without
// control characters (C0, DEL, C1), a tab written as a space (RFC 5322
// §3.2.4 qtext; RFC 6532 §3.2 for UTF-8).
func text(s string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '\t':
			return ' '
		case r < 0x20 || r >= 0x7f && r < 0xa0 || r == unicode.ReplacementChar:
			return -1
		}
		return r
	}, strings.ToValidUTF8(s, ""))
}

// formatPvalue writes a pvalue (RFC 8601 §2.2: a value, or
// [[local-part] "@"] domain-name) bare when it is made only of letters,
// digits and the punctuation of an atom, a domain or an address, as
// header.d=example.com, header.i=@example.com or header.b=AbC/+12 are
// commonly written; else quoted. "=" is quoted although an atom may hold
// it: a reader could take it for the start of another property.
func formatPvalue(s string) string {
	for _, c := range s {
		if !unicode.IsLetter(c) && !unicode.IsDigit(c) && !strings.ContainsRune("!#$%&'*+-./?@^_`{|}~", c) {
			return quoteValue(s)
		}
	}
	return s
}

// quoteValue writes a value (RFC 2045 token or quoted-string): bare if it
// is US-ASCII without white space, control character or tspecial.
func quoteValue(s string) string {
	if s != "" && !strings.ContainsFunc(s, func(c rune) bool { return c <= ' ' || c >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?=`, c) }) {
		return s
	}
	// Escaped byte by byte: '"' and '\' are ASCII, so never inside a
	// UTF-8 sequence. (A strings.Replacer built per call was most of the
	// spf stage's CPU.)
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		if s[i] == '"' || s[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(s[i])
	}
	b.WriteByte('"')
	return b.String()
}
