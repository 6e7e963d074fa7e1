package dkimcore

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
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
	b := NewBodyHasher(c, h, -1)
	for _, ch := range chunks {
		b.Write([]byte(ch))
	}
	n := b.Close()
	return hex.EncodeToString(h.Sum(nil)), n
}

func canonBody(c Canon, in string) string {
	var out strings.Builder
	h := sha256.New()
	b := NewBodyHasher(c, h, -1)
	b.Write([]byte(in))
	b.Close()
	// Re-run into a recorder to see the bytes.
	r := &recorder{}
	b = NewBodyHasher(c, r, -1)
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
		// A bare LF ends a line; a bare CR is content.
		{Simple, "a\rb\n", "a\rb\r\n"},
		{Relaxed, "a \nb\n\n", "a\r\nb\r\n"},
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
		"k=rsa":                             "no p tag",
		"v=DKIM2; p=AAAA":                   "unsupported version",
		"p=AAAA; v=DKIM1":                   "unsupported version",
		"k=dsa; p=AAAA":                     "unsupported key type",
		"k=ed25519; p=AAAA":                 "ed25519 key of 3 bytes",
		"s=other; p=AAAA":                   "not for email",
		"p=!!!":                             "bad base64",
		"k=rsa; p=MFwwDQYJKoZIhvcNAQEBBQAD": "not an RSA public key",
	} {
		if _, err := (Rules{}).ParseKey(rec); err == nil || !errors.Is(err, ErrKeyRecord) || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseKey(%q): %v; want %q", rec, err, want)
		}
	}
	if _, err := (Rules{}).ParseAlgorithm("rsa-sha1"); err == nil || !strings.Contains(err.Error(), "RFC 8301") {
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
		_, _ = Rules{}.ParseKey(s)
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

// TestBodyLimit: only the first limit octets of the canonical body are
// hashed, and Close counts them all (RFC 6376 §3.4.5, l=).
func TestBodyLimit(t *testing.T) {
	r := &recorder{}
	b := NewBodyHasher(Simple, r, 4)
	b.Write([]byte("abc\r\ndef\r\n"))
	if n := b.Close(); n != 10 || string(r.b) != "abc\r" {
		t.Errorf("hashed %q, length %d; want \"abc\\r\", 10", r.b, n)
	}
}

// TestSignedFields: h= takes fields from the bottom up, each once; a name
// named more often than it occurs adds nothing; names compare without
// case; a line with white space before the colon counts under its name.
func TestSignedFields(t *testing.T) {
	h := stages.Header{
		stages.ParseField("From: a"),
		stages.ParseField("Subject:one"),
		stages.ParseField("To: x"),
		stages.ParseField("subject: two"),
		stages.ParseField("Cc : obs"),
	}
	var got []string
	for _, f := range SignedFields(h, []string{"Subject", "SUBJECT", "subject", "from", "cc", "x-none"}) {
		got = append(got, f.Raw())
	}
	if want := "subject: two|Subject:one|From: a|Cc : obs"; strings.Join(got, "|") != want {
		t.Errorf("got %q; want %q", strings.Join(got, "|"), want)
	}
	data := HeaderData(Simple, SignedFields(h, []string{"subject"}), "DKIM-Signature: b=")
	if string(data) != "subject: two\r\nDKIM-Signature: b=" {
		t.Errorf("HeaderData = %q", data)
	}
}

// TestSignVerify: what Sign makes, Verify passes, with a key record of
// the right type; the wrong type, a hash h= does not allow, or one
// changed byte do not.
func TestSignVerify(t *testing.T) {
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))
	a, sig, err := Sign(priv, []byte("data"))
	if err != nil || a != Ed25519SHA256 {
		t.Fatalf("Sign: %s, %v", a, err)
	}
	rec := "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(priv.Public().(ed25519.PublicKey))
	k, err := Rules{}.ParseKey(rec)
	if err != nil {
		t.Fatal(err)
	}
	if err := Verify(k, a, []byte("data"), sig); err != nil {
		t.Errorf("Verify: %v", err)
	}
	if err := Verify(k, a, []byte("Data"), sig); !errors.Is(err, ErrBadSignature) {
		t.Errorf("changed data: %v", err)
	}
	if err := Verify(k, RSASHA256, []byte("data"), sig); err == nil || !errors.Is(err, ErrKeyRecord) {
		t.Errorf("rsa-sha256 with an ed25519 key: %v", err)
	}
	k, _ = Rules{}.ParseKey(rec + "; h=sha1")
	if err := Verify(k, a, []byte("data"), sig); err == nil || !strings.Contains(err.Error(), "hash") {
		t.Errorf("h=sha1: %v", err)
	}
	if a, err := (Rules{Legacy: true}).ParseAlgorithm("RSA-SHA1"); err != nil || a.Hash() != crypto.SHA1 {
		t.Errorf("legacy rsa-sha1: %s %v", a, err)
	}
}

// TestReadBody: the body reaches the writer whole; a nil body is empty;
// a context that has ended stops the read with its cause.
func TestReadBody(t *testing.T) {
	var buf bytes.Buffer
	if err := ReadBody(context.Background(), stages.BytesBody("line\r\n"), &buf); err != nil || buf.String() != "line\r\n" {
		t.Errorf("read %q, %v", buf.String(), err)
	}
	if err := ReadBody(context.Background(), nil, &buf); err != nil {
		t.Errorf("nil body: %v", err)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	stop := errors.New("stage timeout")
	cancel(stop)
	if err := ReadBody(ctx, stages.BytesBody("x"), &buf); !errors.Is(err, stop) {
		t.Errorf("ended context: %v; want %v", err, stop)
	}
}
