package arc

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// mergedResults is the AAR payload the signing suite expects (its README,
// "AR Consolidation"): the server's authserv-id, then the results of every
// Authentication-Results field of that authserv-id, in message order, as
// written (the suite keeps their comments).
func mergedResults(h stages.Header, srvID string) string {
	out := []string{srvID}
	for _, v := range h.Values("Authentication-Results") {
		if f, _ := authres.ParseField(v); f.AuthServID != srvID {
			continue
		}
		_, rest, _ := strings.Cut(v, ";")
		for _, r := range strings.Split(rest, ";") {
			if r = strings.Join(strings.Fields(r), " "); r != "" {
				out = append(out, r)
			}
		}
	}
	return strings.Join(out, "; ")
}

// noSpace removes all white space: the suite folds its expected values
// freely, and a signer's folding is not part of what it signs (relaxed).
func noSpace(s string) string { return strings.Join(strings.Fields(s), "") }

// TestSigningSuite seals each message of the signing suite with its key,
// time and signed fields, and compares the three fields byte for byte
// (white space aside) with the suite's: RSA PKCS#1 v1.5 signatures are
// deterministic, so this checks the canonicalization and the signed data
// exactly. The chain's status in the new seal is this stage's own
// verification, against the suite's DNS records. Each new set must also
// verify as the newest of the chain.
func TestSigningSuite(t *testing.T) {
	docs := loadSuite(t, "testdata/arc-draft-sign-tests.yml")
	cases, agree := 0, 0
	for _, d := range docs {
		key, err := dkimcore.ParsePrivateKey([]byte(d.top["privatekey"]))
		if err != nil {
			t.Fatalf("document key: %v", err)
		}
		alg, _ := dkimcore.KeyAlgorithm(key)
		v := verifier{lookup: dkimcore.ResolverTXT(serveRecords(t, d.records))}
		for _, c := range d.cases {
			cases++
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			h, body := parseMessage(t, c.fields["message"])
			s := &sealer{domain: d.top["domain"], selector: d.top["sel"], key: key, alg: alg, authservID: c.fields["srv-id"]}
			out := v.check(ctx, h, body)
			tm, _ := strconv.ParseInt(c.fields["t"], 10, 64)
			ok := true
			wantAS := noSpace(c.fields["AS"])
			if out.FailedBefore || out.N >= maxInstances {
				if wantAS != "" {
					t.Errorf("%s: no seal for cv=%s; the suite expects one", c.name, out.CV)
					ok = false
				}
			} else {
				aar, ams, as, err := s.fields(ctx, h, body, out, mergedResults(h, c.fields["srv-id"]), tm, dkimcore.SplitList(c.fields["sig-headers"]))
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				for _, cmp := range []struct{ name, got, want string }{
					{"AS", as, c.fields["AS"]}, {"AMS", ams, c.fields["AMS"]}, {"AAR", aar, c.fields["AAR"]},
				} {
					if noSpace(cmp.got) != noSpace(cmp.want) {
						t.Errorf("%s: %s\n got %s\nwant %s", c.name, cmp.name, cmp.got, strings.Join(strings.Fields(cmp.want), " "))
						ok = false
					}
				}
				// The sealed message verifies, with the new set newest.
				sealed := append(stages.Header{{Name: fieldAS, Value: as}, {Name: fieldAMS, Value: ams}, {Name: fieldAAR, Value: aar}}, h...)
				if got := v.check(ctx, sealed, body); out.CV != Fail && got.CV != Pass {
					t.Errorf("%s: the sealed message verifies %s: %s", c.name, got.CV, got.Problem)
					ok = false
				}
			}
			cancel()
			if ok {
				agree++
			}
		}
	}
	if cases != signingCases || agree != signingAgree {
		t.Errorf("%d signing cases, %d agree; README publishes %d, %d", cases, agree, signingCases, signingAgree)
	}
	t.Logf("signing suite: %d of %d cases agree", agree, cases)
}
