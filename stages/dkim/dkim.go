package dkim

import (
	"context"
	"fmt"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
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
// stages/authres: one entry per signature evaluated, in header order,
//
//	dkim=pass header.b=AbCdEfGh header.d=example.com header.i=@example.com header.s=sel
//	dkim=fail reason="body hash did not verify" header.b=... header.d=... header.s=...
//
// header.b is the first 8 characters of b= (RFC 6008), telling apart
// signatures of one domain. Values are quoted where they need it (a d=
// with spaces), by authres, which the headers and dmarc stages read the
// reason back with. Signatures over the limit are one last entry,
// dkim=neutral with a reason saying how many. No signature is "dkim=none".
func (ver verification) reason(maxSigs int) string {
	if len(ver.sigs) == 0 {
		return "dkim=none"
	}
	var entries []authres.Result
	for _, s := range ver.sigs {
		entries = append(entries, authres.Result{Method: "dkim", Value: s.result, Reason: s.problem, Props: []authres.Prop{
			{Key: "header.d", Value: s.domain}, {Key: "header.s", Value: s.selector},
			{Key: "header.i", Value: s.identifier}, {Key: "header.b", Value: first(s.b, 8)},
		}})
	}
	if ver.skipped > 0 {
		entries = append(entries, authres.Result{Method: "dkim", Value: Neutral,
			Reason: fmt.Sprintf("%d more signatures not evaluated, over the limit of %d", ver.skipped, maxSigs)})
	}
	return authres.Format(entries...)
}

func first(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}
