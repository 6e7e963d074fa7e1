package stages

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// The rules an edit's header field and envelope address must follow. The
// pipeline applies edits with them, and a stage that wants to emit only
// edits the pipeline accepts checks with the same functions.

const (
	// foldAt is the line length header values are folded to where they
	// have white space to fold at (RFC 5322 §2.1.1: SHOULD be no more than
	// 78 characters, excluding the CRLF).
	foldAt = 78
	// maxLine is the hard limit on a header line (RFC 5322 §2.1.1: MUST be
	// no more than 998 characters, excluding the CRLF).
	maxLine = 998
)

// NewField returns the header field name: value as it is written: a valid
// name, and the value trimmed and folded to lines of at most 78 characters
// where it has white space to fold at. A value that comes folded already
// is kept as it is, provided every line break in it is a fold (CRLF
// followed by white space and text). A bare CR or LF, or any other control
// character but HTAB, is refused: it would end the field and let the
// caller inject header fields or a body. So is a line over 998 characters.
func NewField(name, value string) (Field, error) {
	if err := CheckFieldName(name); err != nil {
		return Field{}, err
	}
	v := strings.Trim(value, " \t")
	if strings.Contains(v, "\r\n") {
		if err := checkFolded(v); err != nil {
			return Field{}, err
		}
	} else {
		if err := CheckFieldText(v); err != nil {
			return Field{}, err
		}
		v = Fold(name, v)
	}
	for k, line := range strings.Split(v, "\r\n") {
		if k == 0 {
			line = name + ": " + line
		}
		if len(line) > maxLine {
			return Field{}, fmt.Errorf("line of %d characters; the limit is %d (RFC 5322 §2.1.1)", len(line), maxLine)
		}
	}
	return Field{Name: name, Value: v}, nil
}

// CheckFieldName accepts a field name: printable US-ASCII except colon
// (RFC 5322 §3.6.8).
func CheckFieldName(name string) error {
	if name == "" {
		return errors.New("empty field name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("invalid field name %q", name)
		}
	}
	return nil
}

// CheckFieldText accepts one line of header text: no control characters
// but HTAB, so above all no CR or LF.
func CheckFieldText(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 32 && c != '\t') || c == 127 {
			return fmt.Errorf("control character %q in %q", c, s)
		}
	}
	return nil
}

// checkFolded accepts a value folded already: every CRLF is followed by
// white space and some text (RFC 5322 §2.2.3; a line of white space only
// is read as the end of the header by some parsers).
func checkFolded(v string) error {
	for k, line := range strings.Split(v, "\r\n") {
		if err := CheckFieldText(line); err != nil {
			return err
		}
		if k > 0 && (line == "" || !isWSP(line[0]) || strings.Trim(line, " \t") == "") {
			return fmt.Errorf("line break that is not a fold in %q", v)
		}
	}
	return nil
}

// Fold breaks v, the value of field name, into lines of at most 78
// characters by inserting CRLF before white space (RFC 5322 §2.2.3). A
// line with no white space to break at stays longer. v is trimmed and has
// no line breaks; Fold does not check it (NewField does).
func Fold(name, v string) string {
	var b strings.Builder
	used := len(name) + len(": ")
	for used+len(v) > foldAt {
		// Break before the start of a run of white space, so that no
		// line ends up as white space only: the last place that keeps
		// the line within foldAt, else the first place at all.
		cut := -1
		for i := 1; i < len(v); i++ {
			if !isWSP(v[i]) || isWSP(v[i-1]) {
				continue
			}
			if used+i > foldAt {
				if cut < 0 {
					cut = i
				}
				break
			}
			cut = i
		}
		if cut < 0 {
			break
		}
		b.WriteString(v[:cut])
		b.WriteString("\r\n")
		v = v[cut:]
		used = 0
	}
	b.WriteString(v)
	return b.String()
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// EnvelopeAddress checks an envelope address from an edit and strips the
// angle brackets milters tend to send; "" (or "<>") is the null sender.
// Brackets inside, spaces or control characters would let the address
// smuggle parameters into a later MAIL or RCPT command, and the gateway
// never accepts such an address from a client either. An address with a
// domain comes back in the canonical form of package address, the form
// the gateway gives every address a client sends, so that routes and
// later edits compare it alike; a domain that is no domain is refused.
func EnvelopeAddress(s string) (string, error) {
	a := strings.TrimSpace(s)
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = a[1 : len(a)-1]
	}
	if strings.ContainsAny(a, "<>") {
		return "", fmt.Errorf("invalid address %q", s)
	}
	if address.HasControlOrSpace(a) {
		return "", fmt.Errorf("control character or space in address %q", s)
	}
	if _, _, ok := address.Split(a); ok {
		canon, err := address.Parse(a)
		if err != nil {
			return "", fmt.Errorf("invalid address %q: %w", s, err)
		}
		a = canon
	}
	return a, nil
}

// CRLF copies a body with every line ending as CRLF, the form the body has
// on the wire and in the spool (RFC 5322 §2.3: CR and LF only ever appear
// together). A bare CR, a bare LF and CRLF each become one CRLF.
func CRLF(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}
