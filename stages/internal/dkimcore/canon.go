package dkimcore

import (
	"fmt"
	"hash"
	"strings"
)

// Canon is a canonicalization algorithm (RFC 6376 §3.4).
type Canon string

const (
	Simple  Canon = "simple"
	Relaxed Canon = "relaxed"
)

// ParseCanon reads a c= value, "header/body" or "header" alone (the body
// then is simple, RFC 6376 §3.5), without regard to case (the algorithm
// names are ABNF strings, RFC 5234 §2.3). An empty value or an unknown
// algorithm is an error.
func ParseCanon(v string) (header, body Canon, err error) {
	h, b, two := strings.Cut(strings.ToLower(StripFWS(v)), "/")
	if !two {
		b = string(Simple)
	}
	header, body = Canon(h), Canon(b)
	for _, c := range []Canon{header, body} {
		if c != Simple && c != Relaxed {
			return "", "", fmt.Errorf("unknown canonicalization %q", clip(v))
		}
	}
	return header, body, nil
}

// CanonHeader returns a header field canonicalized for hashing, with its
// CRLF. raw is the field as it goes on the wire (stages.Field.Raw), folding
// kept, without the final CRLF.
//
// relaxed (RFC 6376 §3.4.2): the name in lower case; the value unfolded,
// every run of white space made one space, white space at its ends and
// around the colon deleted. simple (§3.4.1): the field unchanged.
func CanonHeader(c Canon, raw string) string {
	if c == Simple {
		return raw + "\r\n"
	}
	name, value, _ := strings.Cut(raw, ":")
	var b strings.Builder
	b.Grow(len(raw) + 2)
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	space := false
	wrote := false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n': // unfold: the CRLF goes, the white space after it stays
		case ' ', '\t':
			space = true
		default:
			if space && wrote {
				b.WriteByte(' ')
			}
			space = false
			b.WriteByte(c)
			wrote = true
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// BodyHasher canonicalizes a body as it is written (RFC 6376 §3.4.3
// simple, §3.4.4 relaxed) and feeds the first limit octets of the result
// to a hash (all of them when limit < 0; l=, §3.4.5), counting the whole
// canonical length so that what lies past l= is known. Memory is constant
// whatever the body.
//
// Line ends: the gateway hands over CRLF; a bare LF (a message file read
// from disk) ends a line as CRLF does, as Mail::DKIM and opendkim read
// it; a bare CR is content.
type BodyHasher struct {
	c       Canon
	h       hash.Hash
	limit   int64
	buf     []byte
	crlfs   int  // line ends seen and not yet written: empty lines at the end are dropped
	wsp     bool // relaxed: white space seen and not yet written
	cr      bool // the last byte was a CR, its LF not yet seen
	content bool // something other than line ends was written
	total   int64
}

// NewBodyHasher returns a BodyHasher writing to h at most limit octets;
// limit < 0 is no limit.
func NewBodyHasher(c Canon, h hash.Hash, limit int64) *BodyHasher {
	return &BodyHasher{c: c, h: h, limit: limit, buf: make([]byte, 0, 32<<10)}
}

// Write canonicalizes p. It never fails.
func (b *BodyHasher) Write(p []byte) (int, error) {
	for _, c := range p {
		if b.cr {
			b.cr = false
			if c == '\n' {
				b.lineEnd()
				continue
			}
			b.emit('\r')
		}
		switch {
		case c == '\r':
			b.cr = true
		case c == '\n':
			b.lineEnd()
		case b.c == Relaxed && (c == ' ' || c == '\t'):
			b.wsp = true
		default:
			b.emit(c)
		}
	}
	return len(p), nil
}

func (b *BodyHasher) lineEnd() {
	b.crlfs++
	b.wsp = false // relaxed: white space at the end of a line is ignored
}

// emit writes content byte c, after the line ends and the space pending
// before it.
func (b *BodyHasher) emit(c byte) {
	for ; b.crlfs > 0; b.crlfs-- {
		b.put('\r')
		b.put('\n')
	}
	if b.wsp {
		b.put(' ')
		b.wsp = false
	}
	b.put(c)
	b.content = true
}

func (b *BodyHasher) put(c byte) {
	if b.limit < 0 || b.total < b.limit {
		b.buf = append(b.buf, c)
		if len(b.buf) == cap(b.buf) {
			b.h.Write(b.buf)
			b.buf = b.buf[:0]
		}
	}
	b.total++
}

// Close ends the body: a body with content ends in exactly one CRLF; an
// empty body is CRLF in simple (§3.4.3) and nothing in relaxed (§3.4.4,
// as corrected by erratum 3192). It returns the length of the whole
// canonicalized body, which is what l= counts (§3.4.5), whatever the
// limit.
func (b *BodyHasher) Close() int64 {
	if b.cr {
		b.cr = false
		b.emit('\r')
	}
	b.crlfs, b.wsp = 0, false
	if b.content || b.c == Simple {
		b.put('\r')
		b.put('\n')
	}
	b.h.Write(b.buf)
	b.buf = b.buf[:0]
	return b.total
}

// Sum is the hash of what was hashed, after Close.
func (b *BodyHasher) Sum() []byte { return b.h.Sum(nil) }
