package dmarc

import (
	"errors"
	"io"
	"mime"
	"net/mail"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// Errors of authorDomains: the From field problems RFC 7489 §6.6.1 says
// are "typically rejected".
var (
	errNoFrom   = errors.New("no From header field")
	errManyFrom = errors.New("several From header fields")
	errNoDomain = errors.New("From header field with an address that has no valid domain")
)

// maxAuthors bounds the domains of one From field that are evaluated, so
// a field listing thousands of addresses costs a bounded number of
// lookups; more is treated as a broken field.
const maxAuthors = 8

// authorDomains returns the distinct domains of the RFC5322.From field
// (RFC 7489 §6.6.1), canonical (lower-case A-labels), in field order.
//
// A message with no From field, or several, is an error. A field with
// several addresses yields each domain: the check runs for each and the
// strictest failing policy applies. A field with no address at all (an
// empty group, "undisclosed-recipients:;") yields none: such messages
// are "typically ignored".
//
// A field RFC 5322 cannot parse is not given up on: a forger would only
// have to break the syntax to escape the check. The addresses are then
// the words with an "@" outside quoted strings and comments, which is
// what mail readers show.
func authorDomains(h stages.Header) ([]string, error) {
	froms := h.Values("From")
	switch {
	case len(froms) == 0:
		return nil, errNoFrom
	case len(froms) > 1:
		return nil, errManyFrom
	}
	var addrs []string
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: func(_ string, r io.Reader) (io.Reader, error) {
		// The display name is not used: any charset will do.
		return r, nil
	}}}
	if list, err := p.ParseList(froms[0]); err == nil {
		for _, a := range list {
			addrs = append(addrs, a.Address)
		}
	} else {
		addrs = looseAddresses(froms[0])
	}
	var domains []string
	for _, a := range addrs {
		_, d, ok := address.Split(a)
		if !ok {
			return nil, errNoDomain
		}
		d, err := address.Domain(strings.TrimRight(d, ">)"))
		if err != nil || strings.HasPrefix(d, "[") {
			return nil, errNoDomain
		}
		if !contains(domains, d) {
			domains = append(domains, d)
		}
		if len(domains) > maxAuthors {
			return nil, errNoDomain
		}
	}
	return domains, nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// looseAddresses finds the address-like words of a From value RFC 5322
// cannot parse: quoted strings and comments are removed, and the words
// between white space, commas, angle brackets, colons and semicolons
// that contain an "@" are kept.
func looseAddresses(v string) []string {
	var b strings.Builder
	depth, quoted := 0, false
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == '\\' && (quoted || depth > 0):
			i++
		case quoted:
			quoted = c != '"'
		case c == '"' && depth == 0:
			quoted = true
		case c == '(':
			depth++
		case c == ')' && depth > 0:
			depth--
		case depth > 0:
		default:
			b.WriteByte(c)
		}
		if quoted || depth > 0 || c == '"' || c == ')' {
			b.WriteByte(' ')
		}
	}
	var out []string
	for _, w := range strings.FieldsFunc(b.String(), func(r rune) bool {
		return strings.ContainsRune(" \t\r\n,<>:;", r)
	}) {
		if strings.Contains(w, "@") {
			out = append(out, w)
		}
	}
	return out
}
