// Package arc verifies Authenticated Received Chains (RFC 8617) at the end
// of DATA: the chain validation status (cv) none, pass or fail, and for a
// pass the oldest instance whose message signature still verifies
// (header.oldest-pass). With seal = true it also adds its own ARC Set,
// for sites that forward mail.
//
// The canonicalization, tag-list, signed-field and key-record code it
// needs is stages/internal/dkimcore, the DKIM core the dkim and dkim-sign
// kinds use too: go-msgauth has DKIM but does not export those parts, and
// has no ARC.
package arc

import (
	"context"
	"net/netip"
	"strconv"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
)

// Result is the chain validation status (RFC 8617 §4.4).
type Result string

const (
	None Result = "none" // no ARC header fields
	Pass Result = "pass" // every seal and the newest message signature verify
	Fail Result = "fail" // anything else
)

// Results are the result words of the kind.
func Results() []string { return []string{string(None), string(Pass), string(Fail)} }

// Filter is a configured arc stage.
type Filter struct {
	v      verifier
	sealer *sealer // nil: verify only
	now    func() time.Time
}

var _ stages.Filter = (*Filter)(nil)

// Info declares the DATA phase, where header and body are known. A
// sealing stage edits (it adds the three fields of its set) and reads the
// results of the stages before it for its ARC-Authentication-Results.
func (f *Filter) Info() stages.Info {
	info := stages.Info{Kind: "arc", Version: "1", Phases: stages.Data, Needs: stages.NeedHeader | stages.NeedBody, Results: Results()}
	if f.sealer != nil {
		info.Edits = true
		info.Needs |= stages.NeedResults
	}
	return info
}

// Run verifies the chain. Whatever the message carries is a result, never
// an error: a malformed chain is "fail", an unreachable key server too
// (ARC has no temperror, RFC 8617 §4.4), with the problem in the reason.
// The action is always continue; [stage.results] maps a result to
// another.
func (f *Filter) Run(ctx context.Context, p stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if p != stages.Data {
		return stages.Verdict{}, nil
	}
	out := f.v.check(ctx, tx.Header, tx.Body)
	v := stages.Verdict{Result: string(out.CV), Reason: reason(out, tx.Client.Addr)}
	if f.sealer != nil {
		edits, err := f.sealer.seal(ctx, tx, out, f.now())
		if err != nil {
			return stages.Verdict{}, err
		}
		v.Edits = edits
	}
	return v, nil
}

// reason is the result as Authentication-Results resinfo (RFC 8601 §2.7,
// RFC 8617 §10.1), written by stages/authres:
// "arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1", with
// reason="..." saying why for a fail.
func reason(out Outcome, ip netip.Addr) string {
	return authres.Format(result(out, ip))
}

// result is the outcome as an entry of the arc method, for the reason and
// the AAR of a new set.
func result(out Outcome, ip netip.Addr) authres.Result {
	r := authres.Result{Method: "arc", Value: string(out.CV), Reason: out.Problem}
	if out.CV == Pass {
		r.Props = append(r.Props, authres.Prop{Key: "header.oldest-pass", Value: strconv.Itoa(out.OldestPass)})
	}
	if ip.IsValid() {
		r.Props = append(r.Props, authres.Prop{Key: "smtp.remote-ip", Value: ip.Unmap().String()})
	}
	return r
}
