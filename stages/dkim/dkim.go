package dkim

import (
	"context"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/emersion/go-msgauth/authres"

	"github.com/mailgate/mailgate/stages"
)

// Filter is a configured dkim stage.
type Filter struct {
	v *verifier
}

var _ stages.Filter = (*Filter)(nil)

// Info declares the DATA phase: the signatures cover the header and body.
// The stage edits nothing; the headers stage writes Authentication-Results
// from its reason.
func (f *Filter) Info() stages.Info {
	return stages.Info{Kind: "dkim", Version: "1", Phases: stages.Data, Needs: stages.NeedHeader | stages.NeedBody, Results: Results()}
}

// rank orders the per-signature results for the message's word: the best
// signature speaks for the message. A pass anywhere is a pass; a fail
// (a signature that verified nothing) comes before the results that say
// less.
var rank = []string{Pass, Fail, Policy, Neutral, TempError, PermError}

// Results are the result words of the stage's verdicts, in rank order,
// then none (no DKIM-Signature).
func Results() []string { return append(append([]string(nil), rank...), None) }

// Run verifies the message's signatures. DKIM problems, DNS failures
// included, are results, never errors: an error means the body could not
// be read or the stage's deadline ended while reading it.
func (f *Filter) Run(ctx context.Context, p stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if p != stages.Data {
		return stages.Verdict{}, nil
	}
	ver, err := f.v.verify(ctx, tx.Header, tx.Body)
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("dkim: %w", err)
	}
	return stages.Verdict{Result: ver.result(), Reason: ver.reason(f.v.maxSigs)}, nil
}

// result is the message's word: the best of its signatures' results in
// rank order, none without a signature.
func (ver verification) result() string {
	best := len(rank)
	for _, s := range ver.sigs {
		for i, r := range rank {
			if r == s.result && i < best {
				best = i
			}
		}
	}
	if best == len(rank) {
		return None
	}
	return rank[best]
}

// reason is Authentication-Results resinfo (RFC 8601 §2.7.1), written by
// go-msgauth's authres: one entry per signature evaluated, in header order,
//
//	dkim=pass header.b=AbCdEfGh header.d=example.com header.i=@example.com header.s=sel
//	dkim=fail reason="body hash did not verify" header.b=... header.d=... header.s=...
//
// header.b is the first 8 characters of b= (RFC 6008), telling apart
// signatures of one domain. A property whose value is not a plain pvalue
// (a d= with spaces, an i= with quotes) is left out rather than quoted.
// Signatures over the limit are one last entry, dkim=neutral with a reason
// saying how many. No signature is "dkim=none". Reasons are this package's
// own words, without ";" "=" or quotes, so that authres.Parse (which
// splits on both) reads every entry back: the contract with the headers
// and dmarc stages.
func (ver verification) reason(maxSigs int) string {
	if len(ver.sigs) == 0 {
		return "dkim=none"
	}
	var parts []string
	add := func(value string, params map[string]string) {
		r := &authres.GenericResult{Method: "dkim", Value: authres.ResultValue(value), Params: params}
		// Format writes "authserv-id; resinfo"; one entry at a time drops
		// the space it leaves after an entry without properties.
		parts = append(parts, strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), ";")))
	}
	for _, s := range ver.sigs {
		ps := map[string]string{"reason": clean(s.problem)}
		for k, v := range map[string]string{"header.d": s.domain, "header.s": s.selector, "header.i": s.identifier, "header.b": first(s.b, 8)} {
			if isPvalue(v) {
				ps[k] = v
			}
		}
		add(s.result, ps)
	}
	if ver.skipped > 0 {
		add(Neutral, map[string]string{"reason": fmt.Sprintf("%d more signatures not evaluated, over the limit of %d", ver.skipped, maxSigs)})
	}
	return strings.Join(parts, "; ")
}

func first(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

// clean keeps a reason to printable ASCII without the characters that
// would end it early for authres.Parse (";", "=") or need escaping.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r >= 0x7f || strings.ContainsRune(`;="\()`, r) {
			return -1
		}
		return r
	}, s)
}

// isPvalue accepts a property value that needs no quoting (RFC 8601 §2.2):
// a domain, local-part@domain or base64 prefix, in characters safe in all.
func isPvalue(s string) bool {
	if s == "" || len(s) > 255 || !utf8.ValidString(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._@+/", c) >= 0) {
			return false
		}
	}
	return true
}
