package dmarc

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// FuzzParseRecord: any record text gives a record or an error, never a
// panic, and a record it accepts is usable (a known policy, pct in range).
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=DMARC1; p=reject; sp=none; np=quarantine; adkim=s; aspf=r; pct=50; t=y; psd=n; fo=1:d; rua=mailto:a@example.com!10m,https://x; ruf=mailto:f@example.com",
		"v=DMARC1; p=bogus; rua=mailto:r@example.com",
		"v=DMARC1;p=none;rua=mailto:%61@example.com!1k",
		"V=BOB", "", ";;;", "v=DMARC1; p=n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRecord(s)
		if err != nil {
			return
		}
		if r.Policy.rank() == 0 && r.Policy != PolicyNone || r.Pct < 0 || r.Pct > 100 {
			t.Fatalf("ParseRecord(%q) = %+v", s, r)
		}
		for _, u := range r.RUA {
			if !strings.Contains(u.Address, "@") || u.MaxSize < 0 {
				t.Fatalf("ParseRecord(%q): rua %+v", s, u)
			}
		}
	})
}

// FuzzAuthorDomains: any From field gives domains or an error, never a
// panic, and at most maxAuthors domains.
func FuzzAuthorDomains(f *testing.F) {
	for _, s := range []string{`"Johnson, Joe <joe@joe.com>" joe@joe.com`, "<<<><joe@joe.com>>>", "a@b.test, c@d.test", "g:;", `(x\) a@b) "q\"@" c@d.test`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ds, err := authorDomains(stages.Header{{Name: "From", Value: s}})
		if err == nil && len(ds) > maxAuthors {
			t.Fatalf("%q: %d domains", s, len(ds))
		}
	})
}
