package dkimcore

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"
	"testing"
)

func TestParseTags(t *testing.T) {
	good := map[string]string{
		"a=1; b=2":               "a=1|b=2",
		" a = 1 ;b=2;":           "a=1|b=2",
		"a=1;\r\n\tb=x y\r\n z":  "a=1|b=x y\r\n z",
		"v=;":                    "v=",
		"h=from : to":            "h=from : to",
		"k_1=2":                  "k_1=2",
		"b=ab\r\n cd; bh=ef":     "b=ab\r\n cd|bh=ef",
		"A=1; a=2":               "A=1|a=2", // names are case-sensitive
		"x=!\"#$%&'()*+,-./:<>~": `x=!"#$%&'()*+,-./:<>~`,
	}
	for in, want := range good {
		ts, err := ParseTags(in)
		if err != nil {
			t.Errorf("ParseTags(%q): %v", in, err)
			continue
		}
		var got []string
		for _, tg := range ts {
			got = append(got, tg.Name+"="+tg.Value)
		}
		if strings.Join(got, "|") != want {
			t.Errorf("ParseTags(%q) = %q; want %q", in, strings.Join(got, "|"), want)
		}
	}
	for _, in := range []string{"", ";", "a=1;;b=2", "a=1; a=2", "1a=2", "a", "=1", "a=1\nb", "a=\x00", "a=1;\r\nb=2\r\n"} {
		if ts, err := ParseTags(in); err == nil {
			t.Errorf("ParseTags(%q) = %v; want an error", in, ts)
		}
	}
	// BlankTag keeps "b=" and what follows its value.
	s := "a=1; b= ab\r\n cd ; bh=x"
	ts, _ := ParseTags(s)
	if got := BlankTag(s, ts.Find("b")); got != "a=1; b=; bh=x" {
		t.Errorf("BlankTag = %q", got)
	}
}

func TestCanonHeader(t *testing.T) {
	// RFC 6376 §3.4.5's example, relaxed.
	if got := CanonHeader(Relaxed, "A:X"); got != "a:X\r\n" {
		t.Errorf("relaxed A = %q", got)
	}
	if got := CanonHeader(Relaxed, "B : Y\t\r\n\tZ  "); got != "b:Y Z\r\n" {
		t.Errorf("relaxed B = %q", got)
	}
	if got := CanonHeader(Simple, "B: Y\t\r\n\tZ  "); got != "B: Y\t\r\n\tZ  \r\n" {
		t.Errorf("simple B = %q", got)
	}
	if got := CanonHeader(Simple, "B:Y"); got != "B:Y\r\n" {
		t.Errorf("simple B without a space = %q", got)
	}
}

func bodyHash(c Canon, chunks ...string) (string, int64) {
	h := sha256.New()
	b := NewBodyHasher(c, h)
	for _, ch := range chunks {
		b.Write([]byte(ch))
	}
	n := b.Close()
	return hex.EncodeToString(h.Sum(nil)), n
}

func canonBody(c Canon, in string) string {
	var out strings.Builder
	h := sha256.New()
	b := NewBodyHasher(c, h)
	b.Write([]byte(in))
	b.Close()
	// Re-run into a recorder to see the bytes.
	r := &recorder{}
	b = NewBodyHasher(c, r)
	b.Write([]byte(in))
	b.Close()
	out.Write(r.b)
	return out.String()
}

func TestCanonBody(t *testing.T) {
	cases := []struct {
		c        Canon
		in, want string
	}{
		// RFC 6376 §3.4.5's example.
		{Relaxed, " C \r\nD \t E\r\n\r\n\r\n", " C\r\nD E\r\n"},
		{Simple, " C \r\nD \t E\r\n\r\n\r\n", " C \r\nD \t E\r\n"},
		{Simple, "", "\r\n"},
		{Relaxed, "", ""},
		{Relaxed, "\r\n\r\n", ""},
		{Simple, "\r\n\r\n", "\r\n"},
		{Simple, "a", "a\r\n"},
		{Relaxed, "a \t", "a\r\n"},
		{Relaxed, "a\r\n \r\nb", "a\r\n\r\nb\r\n"},
		{Simple, "a\rb\n", "a\rb\n\r\n"},
		{Relaxed, "a\r", "a\r\r\n"},
	}
	for _, c := range cases {
		if got := canonBody(c.c, c.in); got != c.want {
			t.Errorf("%s %q = %q; want %q", c.c, c.in, got, c.want)
		}
		// The same in chunks of one byte.
		var chunks []string
		for i := range len(c.in) {
			chunks = append(chunks, c.in[i:i+1])
		}
		whole, n1 := bodyHash(c.c, c.in)
		split, n2 := bodyHash(c.c, chunks...)
		if whole != split || n1 != n2 || n1 != int64(len(c.want)) {
			t.Errorf("%s %q: chunked hash differs or length %d, %d", c.c, c.in, n1, n2)
		}
	}
}

type recorder struct{ b []byte }

func (r *recorder) Write(p []byte) (int, error) { r.b = append(r.b, p...); return len(p), nil }
func (r *recorder) Sum(b []byte) []byte         { return append(b, r.b...) }
func (r *recorder) Reset()                      { r.b = nil }
func (r *recorder) Size() int                   { return 0 }
func (r *recorder) BlockSize() int              { return 1 }

func TestParseKey(t *testing.T) {
	for rec, want := range map[string]string{
		"v=DKIM1; p=":                       "revoked",
		"k=rsa":                             "no p=",
		"v=DKIM2; p=AAAA":                   "v=",
		"p=AAAA; v=DKIM1":                   "first tag",
		"k=dsa; p=AAAA":                     "unknown key type",
		"k=ed25519; p=AAAA":                 "ed25519 key of 3 bytes",
		"s=other; p=AAAA":                   "not email",
		"p=!!!":                             "not base64",
		"k=rsa; p=MFwwDQYJKoZIhvcNAQEBBQAD": "not an RSA public key",
	} {
		if _, err := ParseKey(rec); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q): %v; want %q", rec, err, want)
		}
	}
	if _, err := ParseAlgorithm("rsa-sha1"); err == nil || !strings.Contains(err.Error(), "RFC 8301") {
		t.Errorf("rsa-sha1: %v", err)
	}
}

// FuzzParseTags: any input parses or is refused, the offsets of every tag
// lie in the input, and BlankTag never panics.
func FuzzParseTags(f *testing.F) {
	for _, s := range []string{"a=1; b=2", "v=DKIM1; k=rsa; p=AAAA", "a=1;\r\n b=2 ;", ";;", "b= x\r\n y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ts, err := ParseTags(s)
		if err != nil {
			return
		}
		for i := range ts {
			tg := &ts[i]
			if tg.Start < 0 || tg.End > len(s) || tg.Start > tg.End {
				t.Fatalf("tag %q at %d..%d of %d", tg.Name, tg.Start, tg.End, len(s))
			}
			_ = BlankTag(s, tg)
		}
		_, _ = ParseKey(s)
	})
}

// FuzzBodyHasher: the canonical body never depends on how the body is cut
// into writes.
func FuzzBodyHasher(f *testing.F) {
	f.Add([]byte(" C \r\nD \t E\r\n\r\n"), uint8(3))
	f.Fuzz(func(t *testing.T, body []byte, cut uint8) {
		at := int(cut) % (len(body) + 1)
		for _, c := range []Canon{Simple, Relaxed} {
			a, _ := bodyHash(c, string(body))
			b, _ := bodyHash(c, string(body[:at]), string(body[at:]))
			if a != b {
				t.Fatalf("%s: hash depends on the cut at %d", c, at)
			}
		}
	})
}
