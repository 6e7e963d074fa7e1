package stages

import (
	"bytes"
	"strings"
	"testing"
)

func TestNewField(t *testing.T) {
	word := strings.Repeat("b", 100)
	for _, c := range []struct {
		name, value string
		want        string // the value as written, or "error"
	}{
		{"X-A", " v ", "v"},
		{"X-A", "", ""},
		{"Subject", "a\tb", "a\tb"},
		// A word longer than a line stays whole; the rest still folds.
		{"X-A", "a " + word + " c", "a\r\n " + word + "\r\n c"},
		// Folded already: kept as it came.
		{"DKIM-Signature", "v=1; a=rsa-sha256;\r\n\tb=abc", "v=1; a=rsa-sha256;\r\n\tb=abc"},
		{"X-A", "a\r\nBcc: x@example.org", "error"}, // injected field
		{"X-A", "a\r\n \r\n b", "error"},            // white-space-only line
		{"X-A", "a\r\n", "error"},                   // empty line: the end of the header
		{"X-A", "a\nb", "error"},                    // bare LF
		{"X-A", "a\rb", "error"},                    // bare CR
		{"X-A", "a\x00b", "error"},                  // NUL
		{"X-A", "a\x7fb", "error"},                  // DEL
		{"X A", "a", "error"},                       // space in name
		{"X:A", "a", "error"},                       // colon in name
		{"X-\xe9", "a", "error"},                    // 8-bit name
		{"", "a", "error"},                          // no name
		{"X-A", strings.Repeat("x", 1000), "error"}, // over 998, nowhere to fold
		{"X-A", "a\r\n " + strings.Repeat("x", 998), "error"},
	} {
		f, err := NewField(c.name, c.value)
		got := f.Value
		if err != nil {
			got = "error"
		}
		if got != c.want {
			t.Errorf("NewField(%q, %q) = %q, %v; want %q", c.name, c.value, got, err, c.want)
		}
	}
}

func TestNewFieldFolds(t *testing.T) {
	for _, long := range []string{
		"mx.example.test; spf=pass smtp.mailfrom=sender@example.org; dkim=pass header.d=example.org header.s=sel; dmarc=pass header.from=example.org",
		// Over 998 characters only as a whole: folded, every line fits.
		strings.TrimSpace(strings.Repeat("word ", 400)),
	} {
		f, err := NewField("Authentication-Results", long)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split("Authentication-Results: "+f.Value, "\r\n")
		if len(lines) < 2 {
			t.Fatalf("not folded: %q", f.Value)
		}
		for _, l := range lines {
			if len(l) > 78 {
				t.Errorf("line of %d characters: %q", len(l), l)
			}
		}
		for _, l := range lines[1:] {
			if l[0] != ' ' {
				t.Errorf("continuation line without leading white space: %q", l)
			}
		}
		if got := Unfold(f.Value); got != long {
			t.Errorf("unfolds to\n%q\nwant\n%q", got, long)
		}
	}
}

func TestEnvelopeAddress(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"a@example.test", "a@example.test"},
		{" <a@example.test> ", "a@example.test"},
		{"<>", ""},
		{"<Postmaster>", "Postmaster"}, // RFC 5321 §4.1.1.3: no domain needed
		{"<A@Example.TEST.>", "A@example.test"},
		{"ü@bücher.test", "ü@xn--bcher-kva.test"},
		{"a@bad_domain.test", "error"},
		{"a@", "error"},
		{"", ""},
		{"a@example.test> NOTIFY=NEVER", "error"},
		{"<a<b>", "error"},
		// The gateway takes no address with a space from a client
		// either (gateway/smtpd), and one would end up in commands.
		{"a@example.test NOTIFY=NEVER", "error"},
		{"<a b@example.test>", "error"},
		{"a@example.org\r\nRCPT TO:<x@example.org>", "error"},
		{"b@ex\rample.test", "error"},
		{"a@exa\tmple.test", "error"},
	} {
		got, err := EnvelopeAddress(c.in)
		if err != nil {
			got = "error"
		}
		if got != c.want {
			t.Errorf("EnvelopeAddress(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
}

func TestCRLF(t *testing.T) {
	for in, want := range map[string]string{
		"":                       "",
		"new\nbody\rend":         "new\r\nbody\r\nend",
		"a\r\nb\n\nc\r\r\n":      "a\r\nb\r\n\r\nc\r\n\r\n",
		"line one\nline two\r\n": "line one\r\nline two\r\n",
	} {
		if got := CRLF([]byte(in)); string(got) != want {
			t.Errorf("CRLF(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzNewField(f *testing.F) {
	f.Add("X-A", "a b c")
	f.Add("Subject", strings.Repeat("ab  ", 40))
	f.Add("DKIM-Signature", "v=1;\r\n\tb=abc")
	f.Fuzz(func(t *testing.T, name, value string) {
		field, err := NewField(name, value)
		if err != nil {
			return
		}
		var b bytes.Buffer
		Header{field}.WriteTo(&b)
		// Whatever was accepted parses back as the one field it was.
		h, err := ParseHeader(&b)
		if err != nil || len(h) != 1 || h[0].Name != name {
			t.Fatalf("%q: parsed back as %q (%v)", b.String(), h, err)
		}
		if got, want := Unfold(h[0].Value), strings.TrimSpace(value); !strings.Contains(value, "\r\n") && got != want {
			t.Fatalf("unfolds to %q, want %q", got, want)
		}
	})
}
