package stages

import (
	"bufio"
	"bytes"
	"strings"
	"testing"
)

// oddHeader is a header block written every way RFC 5322 allows and a
// careless rewriter would "fix": no space after the colon, two spaces,
// a tab, folds with tabs and runs of spaces, white space at line ends, an
// empty value, a line that is no field, and obsolete white space before
// the colon (RFC 5322 §4.5).
const oddHeader = "Received: from a by b;\r\n\tMon, 06 Jan 2025 10:00:00 +0000\r\n" +
	"Subject:x\r\n" +
	"To:  two@example.test\r\n" +
	"From:\tAlice <alice@example.test>\r\n" +
	"X-Folded:\r\n\t  first \r\n   second\t\r\n\tthird  \r\n" +
	"X-Empty:\r\n" +
	"X-Trailing: value   \r\n" +
	"not a field line\r\n" +
	"Cc : obs@example.test\r\n" +
	"\r\n"

func parse(t *testing.T, s string) Header {
	t.Helper()
	h, err := ParseHeader(bufio.NewReader(strings.NewReader(s)))
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func write(h Header) string {
	var b bytes.Buffer
	h.WriteTo(&b)
	return b.String()
}

// TestHeaderRoundTrip: a header no one edited is written back byte for
// byte, and its fields still read as before.
func TestHeaderRoundTrip(t *testing.T) {
	h := parse(t, oddHeader)
	if got := write(h); got != oddHeader {
		t.Fatalf("written back as\n%q\nwant\n%q", got, oddHeader)
	}
	for name, want := range map[string]string{
		"Subject":  "x",
		"To":       "two@example.test",
		"From":     "Alice <alice@example.test>",
		"X-Folded": "first    second\t\tthird",
		"X-Empty":  "",
	} {
		if got := h.Get(name); got != want {
			t.Errorf("Get(%q) = %q; want %q", name, got, want)
		}
	}
	if h[2].Value != " two@example.test" {
		t.Errorf("To value %q: one space after the colon goes, the other stays", h[2].Value)
	}
	// The lines that are not fields keep their text, with no name.
	if h[7].Name != "" || h[7].Value != "not a field line" || h[8].Name != "" || h[8].Value != "Cc : obs@example.test" {
		t.Errorf("lines that are no field: %q, %q", h[7], h[8])
	}
}

// TestHeaderEdits: an edited field is written "Name: value"; every other
// field keeps its bytes.
func TestHeaderEdits(t *testing.T) {
	tx := &Transaction{Header: parse(t, oddHeader)}
	err := ApplyEdits(tx, []Edit{
		{Op: HeaderChange, Name: "To", Value: "new@example.test"},
		{Op: SubjectTag, Value: "[SPAM]"},
		{Op: HeaderInsert, Name: "X-Top", Value: "1"},
		{Op: HeaderDelete, Name: "X-Empty"},
		{Op: HeaderAdd, Name: "X-Bottom", Value: "2"},
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "X-Top: 1\r\n" +
		"Received: from a by b;\r\n\tMon, 06 Jan 2025 10:00:00 +0000\r\n" +
		"Subject: [SPAM] x\r\n" +
		"To: new@example.test\r\n" +
		"From:\tAlice <alice@example.test>\r\n" +
		"X-Folded:\r\n\t  first \r\n   second\t\r\n\tthird  \r\n" +
		"X-Trailing: value   \r\n" +
		"not a field line\r\n" +
		"Cc : obs@example.test\r\n" +
		"X-Bottom: 2\r\n" +
		"\r\n"
	if got := write(tx.Header); got != want {
		t.Fatalf("written as\n%q\nwant\n%q", got, want)
	}
}

// TestFieldRaw: Raw gives the bytes read while Name and Value are theirs;
// a field changed in place, or made here, is "Name: Value".
func TestFieldRaw(t *testing.T) {
	for _, c := range []struct {
		f    Field
		want string
	}{
		{ParseField("Subject:x"), "Subject:x"},
		{ParseField("Subject: x"), "Subject: x"},
		{ParseField("Subject:  x"), "Subject:  x"},
		{ParseField("Subject:"), "Subject:"},
		{ParseField("Subject:\r\n\tx"), "Subject:\r\n\tx"},
		{ParseField("no field"), "no field"},
		{Field{Name: "Subject", Value: "x"}, "Subject: x"},
		{Field{Value: "no field"}, "no field"},
	} {
		if got := c.f.Raw(); got != c.want {
			t.Errorf("%#v.Raw() = %q; want %q", c.f, got, c.want)
		}
	}
	for _, c := range []struct {
		edit func(*Field)
		want string
	}{
		{func(f *Field) { f.Value = "y" }, "Subject: y"},
		{func(f *Field) { f.Value = " x" }, "Subject:  x"},
		{func(f *Field) { f.Name = "subject" }, "subject: x"},
		{func(f *Field) { f.Name = "" }, "x"},
		{func(f *Field) {}, "Subject:x"},
	} {
		f := ParseField("Subject:x")
		c.edit(&f)
		if got := f.Raw(); got != c.want {
			t.Errorf("edited to %q %q: Raw() = %q; want %q", f.Name, f.Value, got, c.want)
		}
		// What Raw gives reads back as the field it was.
		if g := ParseField(f.Raw()); g.Name != f.Name || g.Value != f.Value {
			t.Errorf("%q reads back as %q %q; want %q %q", f.Raw(), g.Name, g.Value, f.Name, f.Value)
		}
	}
}

// FuzzHeaderRoundTrip: any header block with CRLF line ends, as the
// gateway spools it, is written back exactly as it was read.
func FuzzHeaderRoundTrip(f *testing.F) {
	f.Add(oddHeader)
	f.Add(" leading continuation\r\nA:b\r\n\r\n")
	f.Add("A:b\r\n \r\n\t\r\n\r\n")
	f.Fuzz(func(t *testing.T, s string) {
		in := string(CRLF([]byte(s)))
		head, _, ok := strings.Cut(in, "\r\n\r\n")
		if !ok || head == "" || strings.HasPrefix(in, "\r\n") {
			return
		}
		head += "\r\n\r\n"
		h, err := ParseHeader(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			t.Fatal(err)
		}
		if got := write(h); got != head {
			t.Fatalf("%q written back as %q", head, got)
		}
	})
}
