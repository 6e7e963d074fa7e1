package arc

import (
	"context"
	"crypto"
	"encoding/base64"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// sealer adds an ARC Set (RFC 8617 §5.1) with its own key.
type sealer struct {
	domain, selector string
	key              crypto.Signer
	alg              dkimcore.Algorithm
	authservID       string // the gateway's name, as in its Authentication-Results
}

// sealNames are the fields the AMS signs when the message has them: those
// a reader sees and a forwarder should not change (RFC 6376 §5.4.1), the
// message's own DKIM signatures, and the ARC-Authentication-Results of
// the set.
var sealNames = []string{
	"From", "Reply-To", "Subject", "Date", "To", "Cc", "Message-ID", "In-Reply-To", "References",
	"MIME-Version", "Content-Type", "Content-Transfer-Encoding", "DKIM-Signature",
}

// authKinds are the kinds whose results go into the AAR: the
// authentication methods of RFC 8601 §2.7 that the gateway has.
var authKinds = []string{"spf", "dkim", "dmarc", "iprev"}

// seal returns the edits that add the stage's ARC Set on top of the
// header: AS, AMS and AAR, in that order from the top. A chain whose
// newest seal says cv=fail gets no set (RFC 8617 §5.1.2: a failed chain
// is not sealed over), nor one that has 50 sets already, nor one whose
// fields cannot be read (there is no instance to give the new set).
func (s *sealer) seal(ctx context.Context, tx *stages.Transaction, out Outcome, now time.Time) ([]stages.Edit, error) {
	if out.FailedBefore || out.N >= maxInstances || (out.CV == Fail && out.N == 0) {
		return nil, nil
	}
	results := []authres.Result{result(Outcome{CV: out.CV, OldestPass: out.OldestPass}, tx.Client.Addr)}
	for _, r := range tx.Results {
		if r.Errored || !dkimcore.ContainsFold(authKinds, r.Kind) {
			continue
		}
		// The reason is resinfo (the contract of these kinds); one that
		// does not read whole is left out rather than copied in part.
		if rs, err := authres.ParseResults(r.Reason); err == nil {
			results = append(results, rs...)
		}
	}
	payload := authres.FormatField(s.authservID, results...)
	aar, ams, as, err := s.fields(ctx, tx.Header, tx.Body, out, payload, now.Unix(), nil)
	if err != nil {
		return nil, err
	}
	var edits []stages.Edit
	for i, f := range []stages.Field{{Name: fieldAS, Value: as}, {Name: fieldAMS, Value: ams}, {Name: fieldAAR, Value: aar}} {
		// Checked as the pipeline will: a value it refuses would fail
		// the whole edit list later, with less to say.
		if _, err := stages.NewField(f.Name, f.Value); err != nil {
			return nil, fmt.Errorf("arc seal: %s: %w", f.Name, err)
		}
		edits = append(edits, stages.Edit{Op: stages.HeaderInsert, Name: f.Name, Value: f.Value, Index: i})
	}
	return edits, nil
}

// fields makes the values of a new ARC Set over header h and body, given
// the verification outcome of the chain already there: the instance is
// N+1 and the seal's cv the chain's status (none for a message without
// one). payload is the authres-payload of the AAR, an
// Authentication-Results value with the gateway's authserv-id (RFC 8617
// §4.1.1); t the signing time.
// names, if not nil, are the fields the AMS signs; nil means those of
// sealNames the message has, once per occurrence, and the new AAR.
//
// The values follow the format the ARC test suite expects of a signer,
// which any verifier reads: tags in alphabetical order, "; " between
// them.
func (s *sealer) fields(ctx context.Context, h stages.Header, body stages.Body, out Outcome, payload string, t int64, names []string) (aar, ams, as string, err error) {
	inst := out.N + 1
	cv := out.CV
	aar = "i=" + strconv.Itoa(inst) + "; " + payload
	hh := append(stages.Header{{Name: fieldAAR, Value: aar}}, h...)

	if names == nil {
		for _, n := range sealNames {
			for _, f := range h {
				if strings.EqualFold(f.Name, n) {
					names = append(names, strings.ToLower(n))
				}
			}
		}
		names = append(names, strings.ToLower(fieldAAR))
	}
	bh := hashBody(ctx, body, dkimcore.Relaxed)
	if bh.err != nil {
		return "", "", "", bh.err
	}
	common := "d=" + s.domain + "; "
	tail := "i=" + strconv.Itoa(inst) + "; s=" + s.selector + "; t=" + strconv.FormatInt(t, 10)

	// The AMS: a DKIM signature over the fields and the body, relaxed
	// (RFC 8617 §5.1; relaxed survives the refolding the gateway may do).
	amsHead := "a=" + string(s.alg) + "; b="
	amsTail := "; bh=" + base64.StdEncoding.EncodeToString(bh.sum) + "; c=relaxed/relaxed; " + common +
		"h=" + strings.Join(names, ":") + "; " + tail
	_, sig, err := dkimcore.Sign(s.key, dkimcore.HeaderData(dkimcore.Relaxed, dkimcore.SignedFields(hh, names), fieldAMS+":"+amsHead+amsTail))
	if err != nil {
		return "", "", "", fmt.Errorf("arc seal: sign AMS: %w", err)
	}
	ams = amsHead + base64.StdEncoding.EncodeToString(sig) + amsTail

	// The AS: over the sets 1..N and the new one, each as AAR, AMS, AS,
	// relaxed (RFC 8617 §5.1.1); over the new set alone when the chain
	// failed (§5.1.2).
	asHead := "a=" + string(s.alg) + "; b="
	asTail := "; cv=" + string(cv) + "; " + common + tail
	var set []stages.Field
	if cv == Pass {
		sets, n, bad := collect(h)
		if bad != nil || n != out.N {
			return "", "", "", fmt.Errorf("arc seal: the chain changed since it was verified")
		}
		for j := 1; j <= n; j++ {
			set = append(set, *sets[j].aar, *sets[j].ams, *sets[j].as)
		}
	}
	set = append(set, stages.Field{Name: fieldAAR, Value: aar}, stages.Field{Name: fieldAMS, Value: ams})
	if _, sig, err = dkimcore.Sign(s.key, dkimcore.HeaderData(dkimcore.Relaxed, set, fieldAS+":"+asHead+asTail)); err != nil {
		return "", "", "", fmt.Errorf("arc seal: sign AS: %w", err)
	}
	as = asHead + base64.StdEncoding.EncodeToString(sig) + asTail
	return aar, ams, as, nil
}
