package dkim

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// FuzzParseSignature feeds the tag-list, signature and key record parsers
// arbitrary text: they must return a result, never panic, and cut b= out
// of the field only inside it.
func FuzzParseSignature(f *testing.F) {
	f.Add("v=1; a=rsa-sha256; d=example.com; s=sel; h=from; bh=AAAA; b=AAAA", "v=DKIM1; k=rsa; p=AAAA")
	f.Add("v=1; a=ed25519-sha256; c=relaxed/relaxed; d=a.b; s=x; h=From:To; i==40a.b; l=10; q=dns/txt; t=1; x=2; bh=; b=", "k=ed25519; h=sha256; s=email; t=s:y; p=11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
	f.Add(" b = x ;; a=\r\n\tb; ", `""`)
	now := time.Unix(1_800_000_000, 0)
	f.Fuzz(func(t *testing.T, field, record string) {
		for _, r := range []dkimcore.Rules{{}, {Legacy: true}} {
			sf := stages.ParseField("DKIM-Signature:" + field)
			s, p := parseSignature(sf, r, now)
			if s == nil {
				t.Fatal("no signature")
			}
			if b := s.tags.Find("b"); b != nil {
				if out := dkimcore.BlankField(sf, b); len(out) > len(sf.Raw()) {
					t.Fatalf("blanking b= grew the field: %q", out)
				}
			}
			if p == nil {
				if k, err := r.ParseKey(record); err == nil {
					s.checkKey(k)
				}
			}
		}
	})
}

// FuzzVerify verifies arbitrary messages against a key that any name
// returns: a result for each signature evaluated, never more than the
// limit, and a reason that authres reads back entry for entry, d= included.
func FuzzVerify(f *testing.F) {
	files, _ := filepath.Glob("testdata/mail-dkim/corpus/*_ed25519.txt")
	files = append(files, "testdata/rfc8463/message.eml", "testdata/rfc6376/message.eml")
	for _, file := range files {
		if data, err := os.ReadFile(file); err == nil {
			f.Add(data)
		}
	}
	f.Add([]byte("DKIM-Signature: v=1\r\nDKIM-Signature: v=1; a=rsa-sha256; l=5\r\n\r\nbody"))
	ed := ed25519.NewKeyFromSeed(make([]byte, 32))
	record := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(ed.Public().(ed25519.PublicKey))
	v := &verifier{
		lookup:  func(context.Context, string) ([]string, error) { return []string{record}, nil },
		maxSigs: 3,
		now:     time.Now,
	}
	f.Fuzz(func(t *testing.T, msg []byte) {
		h, b := splitMessage(t, msg)
		ver, err := v.verify(context.Background(), h, b)
		if err != nil {
			t.Fatal(err)
		}
		if len(ver.sigs) > v.maxSigs {
			t.Fatalf("%d signatures evaluated; limit %d", len(ver.sigs), v.maxSigs)
		}
		want := len(ver.sigs)
		if ver.skipped > 0 {
			want++
		}
		reason := ver.reason(v.maxSigs)
		results, err := authres.ParseResults(reason)
		if ver.result() == None {
			want = 1 // "dkim=none"
		}
		if err != nil || len(results) != want {
			t.Fatalf("reason %q reads back as %d results (%v); want %d", reason, len(results), err, want)
		}
		if err := stages.CheckFieldText(reason); err != nil {
			t.Fatalf("reason %q: %v", reason, err)
		}
		for i, s := range ver.sigs {
			// A d= of printable ASCII reads back as it was, whatever
			// quoting it takes, unless too long to be a domain.
			r := results[i]
			printable := strings.IndexFunc(s.domain, func(c rune) bool { return c < ' ' || c > '~' }) < 0
			if r.Method != "dkim" || r.Value != s.result || (printable && len(s.domain) <= 255 && r.Get("header.d") != s.domain) {
				t.Fatalf("entry %d of %q reads back as %+v", i, reason, r)
			}
		}
	})
}
