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
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"

	"github.com/mailgate/mailgate/stages"
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
// RFC 8617 §10.1), written by go-msgauth's authres:
// "arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1", with
// reason="..." saying why for a fail. authres's ARCResult leaves
// oldest-pass 0 out and its Format has no method name for it, so the
// generic result is used.
func reason(out Outcome, ip netip.Addr) string {
	params := map[string]string{}
	if ip.IsValid() {
		params["smtp.remote-ip"] = ip.Unmap().String()
	}
	if out.CV == Pass {
		params["header.oldest-pass"] = strconv.Itoa(out.OldestPass)
	}
	if out.Problem != "" {
		params["reason"] = clean(out.Problem)
	}
	r := &authres.GenericResult{Method: "arc", Value: authres.ResultValue(out.CV), Params: params}
	return strings.TrimSpace(strings.TrimPrefix(authres.Format("", []authres.Result{r}), ";"))
}

// clean keeps a problem, which may quote the message, to printable ASCII
// without quotes or backslashes: authres quotes the value but escapes
// neither.
func clean(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '"' || c == '\\':
			b.WriteByte('\'')
		case c < 32 || c > 126:
			b.WriteByte('?')
		default:
			b.WriteByte(c)
		}
	}
	return b.String()
}
