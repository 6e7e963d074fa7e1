package headers

import (
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/authres"
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
// read and written by stages/authres.
//
// RFC 8601 §5: a receiver MUST delete any instance of the field that claims
// to come from within its trust boundary but did not, since users and
// filters trust it; it SHOULD add its own at the top, like a trace field.
// A field that does not parse is removed too when its authserv-id is ours
// (authres returns the id it read before the error).
func (f *Headers) addAuthResults(e *editor, tx *stages.Transaction) {
	e.step = "authentication_results"
	e.each(func(name string) bool { return strings.EqualFold(name, authResults) }, func(field stages.Field) (string, bool) {
		parsed, _ := authres.ParseField(field.Value)
		return "", parsed.AuthServID != "" && strings.EqualFold(parsed.AuthServID, f.hostname)
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
	e.insertTop(authResults, authres.FormatField(f.hostname, results...))
}

// authEntries is one stage's result as entries of the field, with its
// method, or nil if the stage is not an authentication method. A dkim
// stage's reason has an entry per signature ("dkim=pass header.d=a.example
// header.s=sel header.b=AbCdEfGh; dkim=fail ..."), and each becomes an
// entry of its own with its header.d, header.s, header.b and header.i, so
// a reader can tell which signature of which domain got what; the others
// give one entry (authResult).
func authEntries(r stages.Result, tx *stages.Transaction) (string, []authres.Result) {
	method, res, ok := authResult(r, tx)
	if !ok {
		return "", nil
	}
	if method != "dkim" || r.Errored {
		return method, []authres.Result{res}
	}
	var out []authres.Result
	// The entries before one that does not parse still count.
	parsed, _ := authres.ParseResults(r.Reason)
	for _, e := range parsed {
		if e.Method != "dkim" || !slices.Contains(authMethods["dkim"], e.Value) {
			continue
		}
		entry := authres.Result{Method: "dkim", Value: e.Value}
		for _, k := range []string{"header.d", "header.s", "header.b", "header.i"} {
			entry.Props = append(entry.Props, authres.Prop{Key: k, Value: e.Get(k)})
		}
		out = append(out, entry)
	}
	if len(out) == 0 {
		// A reason without entries still has the stage's word.
		out = []authres.Result{res}
	}
	return method, out
}

// authResult is one stage's result as an entry of the field, with its
// method; ok is false if the stage is not an authentication method. Its
// properties are those of the first entry of the stage's reason, read as
// resinfo (spf writes "spf=pass smtp.mailfrom=example.org"), for this
// method and this result: an entry for another identity (spf's HELO
// check) or a result quoted from the sender's DNS does not lend its
// properties. Only properties of the ptypes of RFC 8601 §2.3 (smtp,
// header, body, policy) are kept, and no reason=: the stages' reasons are
// for logs.
func authResult(r stages.Result, tx *stages.Transaction) (method string, res authres.Result, ok bool) {
	method = strings.ToLower(r.Kind)
	results, ok := authMethods[method]
	if !ok {
		return "", res, false
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
		return "", res, false
	}
	res = authres.Result{Method: method, Value: result}
	if !r.Errored {
		// The entries before one that does not parse still count.
		entries, _ := authres.ParseResults(r.Reason)
		for _, e := range entries {
			if e.Method != method || e.Value != result {
				continue
			}
			for _, p := range e.Props {
				if slices.Contains([]string{"smtp", "header", "body", "policy"}, p.Type()) && (!dmarcFail || p.Key != "policy.dmarc") {
					res.Props = append(res.Props, p)
				}
			}
			break
		}
	}
	if dmarcFail && !r.Errored {
		res.Props = append(res.Props, authres.Prop{Key: "policy.dmarc", Value: disposition})
	}
	if method == "spf" && res.Get("smtp.mailfrom") == "" && res.Get("smtp.helo") == "" {
		// RFC 8601 §2.7.2: SPF reports the identity it checked, the
		// MAIL FROM domain, or the HELO name for the null sender (RFC
		// 7208 §2.4).
		if _, domain, ok := address.Split(tx.From); ok {
			res.Props = append(res.Props, authres.Prop{Key: "smtp.mailfrom", Value: domain})
		} else if tx.From == "" {
			res.Props = append(res.Props, authres.Prop{Key: "smtp.helo", Value: tx.Client.Helo})
		}
	}
	return method, res, true
}
