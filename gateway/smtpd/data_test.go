package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/mailgate/mailgate/stages"
)

func TestLineEndReader(t *testing.T) {
	cases := []struct {
		in, normalized string
		bare           bool
	}{
		{"a\r\nb\r\n", "a\r\nb\r\n", false},
		{"a\nb\n", "a\r\nb\r\n", true},
		{"\n", "\r\n", true},
		{"a\rb\r\n", "a b\r\n", true},
		{"a\r\r\n", "a \r\n", true},
		{"x\n.\nMAIL FROM:<e@x>\r\n", "x\r\n.\r\nMAIL FROM:<e@x>\r\n", true},
		{"x\r.\rY\r\n", "x . Y\r\n", true},
		{"tail\r", "tail ", true},
		{"", "", false},
		{"\r\n\x00.\r\n", "\r\n\x00.\r\n", false},
	}
	for _, c := range cases {
		// One byte at a time too, so a CRLF split across reads is seen.
		for _, oneByte := range []bool{false, true} {
			var r io.Reader = strings.NewReader(c.in)
			if oneByte {
				r = iotest.OneByteReader(r)
			}
			got, err := io.ReadAll(newDataBuffers().lineEndReader(r, false))
			if err != nil || string(got) != c.normalized {
				t.Errorf("normalize %q (one byte %v) = %q, %v; want %q", c.in, oneByte, got, err, c.normalized)
			}
			lr := newDataBuffers().lineEndReader(strings.NewReader(c.in), true)
			_, err = io.ReadAll(lr)
			if bare := errors.Is(err, errBareLineEnd); bare != c.bare {
				t.Errorf("reject %q: err %v, want bare=%v", c.in, err, c.bare)
			}
		}
	}
}

func TestLineEndReaderLongLine(t *testing.T) {
	// Longer than the reader's buffer, with a CR at the buffer boundary.
	in := strings.Repeat("a", 32*1024-1) + "\r\n" + strings.Repeat("b", 70000) + "\r\n"
	got, err := io.ReadAll(newDataBuffers().lineEndReader(strings.NewReader(in), false))
	if err != nil || string(got) != in {
		t.Fatalf("long lines changed (err %v, len %d want %d)", err, len(got), len(in))
	}
}

func FuzzLineEndReader(f *testing.F) {
	for _, s := range []string{"a\r\n", "a\nb\r\n.\r\n", "\r\r\n\n\r", "x\r.\r\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		got, err := io.ReadAll(newDataBuffers().lineEndReader(bytes.NewReader(in), false))
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range got {
			if c == '\n' && (i == 0 || got[i-1] != '\r') || c == '\r' && (i+1 == len(got) || got[i+1] != '\n') {
				t.Fatalf("bare line end at %d in %q (from %q)", i, got, in)
			}
		}
		if isClean(in) && len(in) > 0 && in[len(in)-1] != '\r' && !bytes.Equal(got, in) {
			t.Fatalf("clean input changed: %q -> %q", in, got)
		}
		again, _ := io.ReadAll(newDataBuffers().lineEndReader(bytes.NewReader(got), false))
		if !bytes.Equal(again, got) {
			t.Fatalf("not idempotent: %q -> %q", got, again)
		}
	})
}

// max_hops counts the Received fields of the parsed header: not a
// continuation line, another field's name or the body.
func TestReceivedCount(t *testing.T) {
	msg := "Received: a\r\nreceived: b\r\n continued Received: no\r\nX-Received: no\r\nSubject: s\r\n\r\nReceived: body\r\n"
	h, err := stages.ParseHeader(bufio.NewReader(strings.NewReader(msg)))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(h.Values("Received")); n != 2 {
		t.Fatalf("Received fields = %d, want 2", n)
	}
}

// timeoutReader gives its bytes with a timeout error, as a connection
// whose deadline passed in the middle of a line, and fails the test when
// it is read again: that read would wait out the deadline a second time.
type timeoutReader struct {
	t    *testing.T
	data string
	read bool
}

type timeoutErr struct{}

func (timeoutErr) Error() string { return "i/o timeout" }
func (timeoutErr) Timeout() bool { return true }

func (r *timeoutReader) Read(p []byte) (int, error) {
	if r.read {
		r.t.Error("read again after a timeout")
		return 0, io.ErrUnexpectedEOF
	}
	r.read = true
	return copy(p, r.data), timeoutErr{}
}

// A partial last line and the timeout that cut it come in one read; the
// line end reader returns the bytes, then the timeout, without reading
// again (data_timeout must not be waited out twice).
func TestLineEndReaderKeepsError(t *testing.T) {
	for _, reject := range []bool{false, true} {
		got, err := io.ReadAll(newDataBuffers().lineEndReader(&timeoutReader{t: t, data: "Subject: x\r\n\r\npartial"}, reject))
		if string(got) != "Subject: x\r\n\r\npartial" || !errors.Is(err, timeoutErr{}) {
			t.Errorf("reject=%v: got %q, %v; want the bytes and the timeout", reject, got, err)
		}
	}
}

// FuzzIsClean: isClean answers as the byte-by-byte rule it stands for.
func FuzzIsClean(f *testing.F) {
	for _, s := range []string{"", "a\r\n", "\r\n\r\n", "\r", "\n", "a\rb\r\n", "a\r\nb\n", "\r\r\n", "a\r\n\r"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		want := true
		for i, c := range in {
			if c == '\n' && (i == 0 || in[i-1] != '\r') || c == '\r' && (i+1 == len(in) || in[i+1] != '\n') {
				want = false
			}
		}
		if got := isClean(in); got != want {
			t.Fatalf("isClean(%q) = %v, want %v", in, got, want)
		}
	})
}
