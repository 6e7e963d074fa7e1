package headers

import (
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

const authResults = "Authentication-Results"

// authMethods are the kinds of stages whose results are authentication
// results, as the RFC 8601 method each reports, with the result words the
// method has (RFC 8601 §2.7; RFC 8617 §7.2 for ARC). A DNSBL is not one:
// its listings go to the spam fields.
var authMethods = map[string][]string{
	"spf":   {"none", "neutral", "pass", "fail", "softfail", "policy", "temperror", "permerror"},
	"dkim":  {"none", "pass", "fail", "policy", "neutral", "temperror", "permerror"},
	"dmarc": {"none", "pass", "fail", "temperror", "permerror"},
	"arc":   {"none", "pass", "fail"},
	"iprev": {"pass", "fail", "temperror", "permerror"},
}

// addAuthResults removes the Authentication-Results fields that claim this
// gateway's authserv-id and puts one of its own on top.
//
// RFC 8601 §5: a receiver MUST delete any instance of the field that claims
// to come from within its trust boundary but did not, since users and
// filters trust it; it SHOULD add its own at the top, like a trace field.
func (f *Headers) addAuthResults(e *editor, tx *stages.Transaction) {
	e.step = "authentication_results"
	e.each(func(name string) bool { return strings.EqualFold(name, authResults) }, func(field stages.Field) (string, bool) {
		return "", strings.EqualFold(authservID(field.Value), f.hostname)
	})
	var b strings.Builder
	b.WriteString(f.hostname)
	n := 0
	for _, r := range tx.Results {
		if spec := resinfo(r, tx); spec != "" {
			b.WriteString("; ")
			b.WriteString(spec)
			n++
		}
	}
	if n == 0 {
		// RFC 8601 §2.2: "none" says no authentication was done.
		b.WriteString("; none")
	}
	e.insertTop(authResults, b.String())
}

// resinfo renders one stage's result as "method=result ptype.property=value
// ...", or "" if the stage is not an authentication method. Properties are
// the "ptype.property=value" words of the stage's reason (RFC 8601 §2.3:
// ptype smtp, header, body or policy).
func resinfo(r stages.Result, tx *stages.Transaction) string {
	method := strings.ToLower(r.Kind)
	results, ok := authMethods[method]
	if !ok {
		return ""
	}
	result := strings.ToLower(r.Result)
	if r.Errored {
		// The check broke: a transient error as far as anyone can tell
		// (RFC 8601 §2.7.1, §2.7.2).
		result = "temperror"
	}
	if !slices.Contains(results, result) {
		// A word outside the method's registry would mislead whoever
		// reads the field; "arc" has no temperror to fall back on.
		return ""
	}
	spec := method + "=" + result
	hasIdentity := false
	for _, w := range strings.Fields(r.Reason) {
		w = strings.TrimRight(w, ",;:")
		prop, val, ok := strings.Cut(w, "=")
		ptype, _, dotted := strings.Cut(prop, ".")
		if !ok || !dotted || !slices.Contains([]string{"smtp", "header", "body", "policy"}, ptype) || !isKeyword(strings.ToLower(prop)) || !isPvalue(val) {
			continue
		}
		spec += " " + strings.ToLower(prop) + "=" + val
		hasIdentity = hasIdentity || ptype == "smtp"
	}
	if method == "spf" && !hasIdentity {
		// RFC 8601 §2.7.2: SPF reports the identity it checked, the
		// MAIL FROM domain, or the HELO name for the null sender (RFC
		// 7208 §2.4).
		if _, domain, ok := address.Split(tx.From); ok && isPvalue(domain) {
			spec += " smtp.mailfrom=" + domain
		} else if tx.From == "" && isPvalue(tx.Client.Helo) {
			spec += " smtp.helo=" + tx.Client.Helo
		}
	}
	return spec
}

// authservID returns the authserv-id of an Authentication-Results value:
// its first word after any comments (RFC 8601 §2.2), "" if there is none.
func authservID(v string) string {
	v = stages.Unfold(v)
	for {
		v = strings.TrimLeft(v, " \t")
		if !strings.HasPrefix(v, "(") {
			break
		}
		v = skipComment(v)
	}
	if strings.HasPrefix(v, `"`) {
		if end := strings.IndexByte(v[1:], '"'); end >= 0 {
			return v[1 : end+1]
		}
		return ""
	}
	if end := strings.IndexAny(v, "; \t("); end >= 0 {
		return v[:end]
	}
	return v
}

// skipComment returns v after the comment it starts with; comments nest and
// take backslash escapes (RFC 5322 §3.2.2).
func skipComment(v string) string {
	depth := 0
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '\\':
			i++
		case '(':
			depth++
		case ')':
			if depth--; depth == 0 {
				return v[i+1:]
			}
		}
	}
	return ""
}

// isKeyword accepts a method, result or property name: letters, digits,
// hyphens and dots (RFC 8601 §2.2, Keyword and ptype.property).
func isKeyword(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return false
		}
	}
	return true
}

// isPvalue accepts a property value that needs no quoting: a domain, a
// local-part@domain or a token (RFC 8601 §2.2, pvalue), kept to characters
// that are safe in all three.
func isPvalue(s string) bool {
	if s == "" || len(s) > maxPlaceholder {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("-._@+=/!#$%&'*^`{|}~", c) >= 0) {
			return false
		}
	}
	return true
}

// isToken accepts an authserv-id written bare (RFC 2045 token).
func isToken(s string) bool {
	return s != "" && isPvalue(s) && !strings.ContainsAny(s, "@=/")
}
