//go:debug rsa1024min=0

package dkim

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// The //go:debug line lets the legacy run below check the corpus's
// 512-bit signatures: crypto/rsa refuses keys under 1024 bits by default,
// as RFC 8301 does; the stage itself refuses them before crypto/rsa sees
// them.

// corpus is testdata/mail-dkim-expected.json, as far as the tests read it.
type corpus struct {
	Cases []struct {
		File          string `json:"file"`
		Expected      string `json:"expected"`
		SkippedInPerl bool   `json:"skipped_in_perl"`
		Signatures    []struct {
			Header   string   `json:"header"`
			Kind     string   `json:"kind"`
			Legacy   []string `json:"pre_rfc8301_or_legacy"`
			Expected *string  `json:"expected"`
			D        *string  `json:"d"`
		} `json:"signatures"`
	} `json:"cases"`
}

func loadCorpus(t *testing.T) corpus {
	t.Helper()
	data, err := os.ReadFile("testdata/mail-dkim-expected.json")
	if err != nil {
		t.Fatal(err)
	}
	var c corpus
	if err := json.Unmarshal(data, &c); err != nil {
		t.Fatal(err)
	}
	if len(c.Cases) != 79 {
		t.Fatalf("corpus has %d cases, want 79", len(c.Cases))
	}
	return c
}

// agrees reports whether our result is the corpus's word in RFC 8601
// terms: Mail::DKIM's "invalid" is every signature that could not be
// checked, permerror or neutral here (temperror for a DNS failure).
func agrees(corpusWord, ours string) bool {
	switch corpusWord {
	case "invalid":
		return ours == PermError || ours == Neutral || ours == TempError
	default:
		return corpusWord == ours
	}
}

// Pass counts of the corpus run, published in README.md (## Conformance).
// They are exact: a change either way is a regression or an unrecorded
// improvement.
const (
	// DKIM signatures with a corpus expectation and no legacy trait: the
	// result must be the corpus's.
	wantExact = 6
	// Signatures with a legacy trait: they must not pass; their answer is
	// the modern one listed in the README.
	wantModern = 61
	// The same corpus with the legacy rules on: the corpus's own answer,
	// on every signature it asserts except those of the g= tag, which RFC
	// 6376 removed (wantLegacyDiffer).
	wantLegacyAgree = 54
)

// wantLegacyDiffer are the asserted signatures where the legacy run must
// differ from Mail::DKIM: their key records have a g= tag (RFC 4871 key
// granularity), which RFC 6376 removed and this verifier ignores.
var wantLegacyDiffer = []string{"badkey_12.txt", "badkey_13.txt", "badkey_8.txt", "badkey_9.txt"}

// TestMailDKIMCorpus runs the Mail::DKIM corpus with its keys served by a
// loopback DNS server, once as the stage runs (modern rules) and once with
// the legacy rules that the corpus was written for, and checks the README
// lists every legacy case with the answer the stage gives.
func TestMailDKIMCorpus(t *testing.T) {
	c := loadCorpus(t)
	srv := serveDNSFiles(t, "testdata/mail-dkim/FAKE_DNS.dat")
	modern := newTestVerifier(t, srv, dkimcore.Rules{})
	legacy := newTestVerifier(t, srv, dkimcore.Rules{Legacy: true})
	var exact, modernN, legacyAgree int
	var legacyDiffer, rows []string
	for _, cs := range c.Cases {
		file := filepath.Base(cs.File)
		mv := verifyFile(t, modern, filepath.Join("testdata", cs.File))
		lv := verifyFile(t, legacy, filepath.Join("testdata", cs.File))
		nDKIM, allModern := 0, true
		for _, s := range cs.Signatures {
			if s.Kind != "dkim" {
				// RFC 4870 DomainKeys is not DKIM: not evaluated.
				rows = append(rows, fmt.Sprintf("| %s | DomainKey-Signature d=%s | %s | not evaluated | - | DomainKeys (RFC 4870) is not DKIM |", file, deref(s.D), deref(s.Expected)))
				continue
			}
			nDKIM++
			if nDKIM > len(mv.sigs) {
				t.Errorf("%s: %d results for %d DKIM signatures", file, len(mv.sigs), nDKIM)
				break
			}
			got, gotLegacy := mv.sigs[nDKIM-1], lv.sigs[nDKIM-1]
			if len(s.Legacy) > 0 {
				allModern = false
				if got.result == Pass {
					t.Errorf("%s signature %d: a legacy signature (%s) passes", file, nDKIM, strings.Join(s.Legacy, "; "))
				}
				modernN++
				rows = append(rows, fmt.Sprintf("| %s | %d d=%s | %s | %s | %s | %s |", file, nDKIM, deref(s.D), deref(s.Expected), got.result, gotLegacy.result, got.problem))
			}
			if s.Expected == nil {
				continue
			}
			if len(s.Legacy) == 0 {
				if !agrees(*s.Expected, got.result) {
					t.Errorf("%s signature %d: %s (%s); corpus says %s", file, nDKIM, got.result, got.problem, *s.Expected)
				} else {
					exact++
				}
			}
			if cs.SkippedInPerl {
				continue
			}
			if agrees(*s.Expected, gotLegacy.result) {
				legacyAgree++
			} else {
				legacyDiffer = append(legacyDiffer, file)
			}
		}
		if nDKIM != len(mv.sigs) {
			t.Errorf("%s: %d results for %d DKIM signatures", file, len(mv.sigs), nDKIM)
		}
		if nDKIM == 0 && mv.result() != None {
			t.Errorf("%s: no DKIM signature gives %s; want none", file, mv.result())
		}
		if allModern && nDKIM > 0 && !agrees(cs.Expected, mv.result()) {
			t.Errorf("%s: message result %s; corpus says %s", file, mv.result(), cs.Expected)
		}
	}
	t.Logf("Mail::DKIM corpus: %d exact, %d legacy with the modern answer, legacy rules: %d agree", exact, modernN, legacyAgree)
	if exact != wantExact || modernN != wantModern || legacyAgree != wantLegacyAgree {
		t.Errorf("counts: exact %d (want %d), modern %d (want %d), legacy rules agree %d (want %d)", exact, wantExact, modernN, wantModern, legacyAgree, wantLegacyAgree)
	}
	slices.Sort(legacyDiffer)
	if !slices.Equal(legacyDiffer, wantLegacyDiffer) {
		t.Errorf("legacy rules differ from the corpus on %v; want %v", legacyDiffer, wantLegacyDiffer)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	var missing []string
	for _, r := range rows {
		if !strings.Contains(string(readme), r+"\n") {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		t.Errorf("README.md does not list %d corpus cases as the stage answers them; the rows:\n%s", len(missing), strings.Join(rows, "\n"))
	}
}

func deref(s *string) string {
	if s == nil {
		return "-"
	}
	return *s
}

// TestRFCExamples verifies the examples of RFC 6376 Appendix A and RFC
// 8463 Appendix A with their key records.
func TestRFCExamples(t *testing.T) {
	srv := serveDNSFiles(t, "testdata/rfc6376/dns.txt", "testdata/rfc8463/dns.txt")
	v := newTestVerifier(t, srv, dkimcore.Rules{})
	for _, tc := range []struct {
		file string
		want string // the reason
	}{
		{"rfc6376/message.eml", "dkim=pass header.b=AuUoFEfD header.d=example.com header.i=joe@football.example.com header.s=brisbane"},
		{"rfc6376/message-as-printed.eml", `dkim=fail reason="body hash did not verify" header.b=AuUoFEfD header.d=example.com header.i=joe@football.example.com header.s=brisbane`},
		{"rfc8463/message.eml", "dkim=pass header.b=/gCrinpc header.d=football.example.com header.i=@football.example.com header.s=brisbane; " +
			"dkim=pass header.b=F45dVWDf header.d=football.example.com header.i=@football.example.com header.s=test"},
	} {
		ver := verifyFile(t, v, filepath.Join("testdata", tc.file))
		if got := ver.reason(v.maxSigs); got != tc.want {
			t.Errorf("%s:\n got %s\nwant %s", tc.file, got, tc.want)
		}
	}
}
