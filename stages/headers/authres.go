package headers

import (
	"slices"
	"strconv"
	"strings"

	"github.com/emersion/go-msgauth/authres"

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

// dmarcDispositions are the dmarc kind's words for a DMARC failure, which
// name the disposition applied: each is dmarc=fail, with the disposition
// as policy.dmarc (DMARCbis's property: the policy applied after pct and
// local overrides).
var dmarcDispositions = map[string]string{"fail": "none", "quarantine": "quarantine", "reject": "reject"}

// addAuthResults removes the Authentication-Results fields that claim this
// gateway's authserv-id and puts one of its own on top, with one entry per
// method, except DKIM, which has one per signature (RFC 8601 §2.7.1),
// built by go-msgauth's authres.
//
// RFC 8601 §5: a receiver MUST delete any instance of the field that claims
// to come from within its trust boundary but did not, since users and
// filters trust it; it SHOULD add its own at the top, like a trace field.
func (f *Headers) addAuthResults(e *editor, tx *stages.Transaction) {
	e.step = "authentication_results"
	e.each(func(name string) bool { return strings.EqualFold(name, authResults) }, func(field stages.Field) (string, bool) {
		return "", strings.EqualFold(authservID(field.Value), f.hostname)
	})
	// The entries of each method, in the order methods first report. A
	// stage that runs in several phases (spf at MAIL and again at DATA)
	// reports in each, and the last is what the message got.
	var (
		methods []string
		entries = map[string][]authres.Result{}
	)
	for _, r := range tx.Results {
		method, res := authEntries(r, tx)
		if res == nil {
			continue
		}
		if _, ok := entries[method]; !ok {
			methods = append(methods, method)
		}
		entries[method] = res
	}
	var results []authres.Result
	for _, m := range methods {
		results = append(results, entries[m]...)
	}
	e.insertTop(authResults, format(f.hostname, results))
}

// format writes the field's value: the authserv-id and the results, or
// "none" if there are none (RFC 8601 §2.2). authres.Format leaves a space
// after a result without properties; it is formatted one result at a time
// to drop it.
func format(authservID string, results []authres.Result) string {
	if len(results) == 0 {
		return authres.Format(authservID, nil)
	}
	parts := []string{authservID}
	for _, r := range results {
		parts = append(parts, strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), ";")))
	}
	return strings.Join(parts, "; ")
}

// authEntries is one stage's result as entries of the field, with its
// method, or nil if the stage is not an authentication method. A dkim
// stage's reason has an entry per signature ("dkim=pass header.d=a.example
// header.s=sel header.b=AbCdEfGh; dkim=fail ..."), and each becomes an
// entry of its own with its header.d, header.s, header.b and header.i, so
// a reader can tell which signature of which domain got what; the others
// give one entry (authResult).
func authEntries(r stages.Result, tx *stages.Transaction) (string, []authres.Result) {
	method, res := authResult(r, tx)
	if res == nil {
		return "", nil
	}
	if method != "dkim" || r.Errored {
		return method, []authres.Result{res}
	}
	var out []authres.Result
	for _, e := range resinfo(r.Reason) {
		if e.method != "dkim" || !slices.Contains(authMethods["dkim"], e.value) {
			continue
		}
		props := map[string]string{}
		for _, k := range []string{"header.d", "header.s", "header.b", "header.i"} {
			if v := e.props[k]; isPvalue(v) {
				props[k] = v
			}
		}
		out = append(out, &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(e.value), Params: props})
	}
	if len(out) == 0 {
		// A reason without entries still has the stage's word.
		out = []authres.Result{res}
	}
	return method, out
}

// resinfoEntry is one "method=result ptype.property=value ..." entry.
type resinfoEntry struct {
	method, value string
	props         map[string]string
}

// resinfo splits a stage's reason into its entries, keeping every property
// (authres.Parse keeps only those it knows for a method: header.d and
// header.i of a DKIM result, not header.s or header.b). Like authres.Parse
// it splits entries on ";" and properties on white space, so a quoted
// reason=... loses its words after the first, which is never used here.
func resinfo(reason string) []resinfoEntry {
	var out []resinfoEntry
	for _, part := range strings.Split(reason, ";") {
		words := strings.Fields(part)
		if len(words) == 0 {
			continue
		}
		method, value, ok := strings.Cut(words[0], "=")
		if !ok {
			continue
		}
		e := resinfoEntry{method: strings.ToLower(method), value: strings.ToLower(value), props: map[string]string{}}
		for _, w := range words[1:] {
			if k, v, ok := strings.Cut(w, "="); ok {
				e.props[strings.ToLower(k)] = v
			}
		}
		out = append(out, e)
	}
	return out
}

// authResult is one stage's result as an entry of the field, with its
// method, or nil if the stage is not an authentication method. Its
// properties are those of the first entry of the stage's reason, read as
// resinfo (spf writes "spf=pass smtp.mailfrom=example.org"), for this
// method and this result: an entry for another identity (spf's HELO
// check) or a result quoted from the sender's DNS does not lend its
// properties. Only ptype.property pairs with values that need no quoting
// are kept (RFC 8601 §2.3: ptype smtp, header, body or policy).
func authResult(r stages.Result, tx *stages.Transaction) (string, authres.Result) {
	method := strings.ToLower(r.Kind)
	results, ok := authMethods[method]
	if !ok {
		return "", nil
	}
	result := strings.ToLower(r.Result)
	disposition, dmarcFail := dmarcDispositions[result]
	if dmarcFail = dmarcFail && method == "dmarc"; dmarcFail {
		result = "fail"
	}
	if r.Errored {
		// The check broke: a transient error as far as anyone can tell
		// (RFC 8601 §2.7.1, §2.7.2).
		result = "temperror"
	}
	if !slices.Contains(results, result) {
		// A word outside the method's registry would mislead whoever
		// reads the field; "arc" has no temperror to fall back on.
		return "", nil
	}
	props := map[string]string{}
	if !r.Errored {
		// Parse stops at the first entry it cannot read, and returns
		// those before it.
		_, entries, _ := authres.Parse("reason; " + r.Reason)
		for _, entry := range entries {
			m, value, ps := entryOf(entry)
			if m != method || string(value) != result {
				continue
			}
			for k, v := range ps {
				ptype, _, dotted := strings.Cut(k, ".")
				if dotted && slices.Contains([]string{"smtp", "header", "body", "policy"}, ptype) && isKeyword(k) && isPvalue(v) {
					props[k] = v
				}
			}
			break
		}
	}
	if dmarcFail && !r.Errored {
		props["policy.dmarc"] = disposition
	}
	if method == "spf" && props["smtp.mailfrom"] == "" && props["smtp.helo"] == "" {
		// RFC 8601 §2.7.2: SPF reports the identity it checked, the
		// MAIL FROM domain, or the HELO name for the null sender (RFC
		// 7208 §2.4).
		if _, domain, ok := address.Split(tx.From); ok && isPvalue(domain) {
			props["smtp.mailfrom"] = domain
		} else if tx.From == "" && isPvalue(tx.Client.Helo) {
			props["smtp.helo"] = tx.Client.Helo
		}
	}
	return method, &authres.GenericResult{Method: method, Value: authres.ResultValue(result), Params: props}
}

// entryOf returns the method, result and properties of an entry authres
// parsed, whatever type it parsed it into.
func entryOf(r authres.Result) (string, authres.ResultValue, map[string]string) {
	switch r := r.(type) {
	case *authres.SPFResult:
		return "spf", r.Value, map[string]string{"smtp.mailfrom": r.From, "smtp.helo": r.Helo}
	case *authres.DKIMResult:
		return "dkim", r.Value, map[string]string{"header.d": r.Domain, "header.i": r.Identifier}
	case *authres.DMARCResult:
		return "dmarc", r.Value, map[string]string{"header.from": r.From}
	case *authres.IPRevResult:
		return "iprev", r.Value, map[string]string{"policy.iprev": r.IP}
	case *authres.ARCResult:
		ps := map[string]string{"smtp.remote-ip": r.RemoteIP}
		if r.OldestPass > 0 {
			ps["header.oldest-pass"] = strconv.Itoa(r.OldestPass)
		}
		return "arc", r.Value, ps
	case *authres.GenericResult:
		return strings.ToLower(r.Method), r.Value, r.Params
	}
	return "", "", nil
}

// authservID returns the authserv-id of an Authentication-Results value:
// its first word after any comments (RFC 8601 §2.2), "" if there is none.
// authres.Parse is not used here: it reads neither comments nor a quoted
// authserv-id, and refuses a version other than 1, so a forged field
// written so would stay.
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
