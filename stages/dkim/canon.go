package dkim

import (
	"hash"
	"strings"
)

// Canonicalization algorithms (RFC 6376 §3.4).
const (
	simple  = "simple"
	relaxed = "relaxed"
)

// canonHeader returns a header field in the canonical form algo names,
// with its CRLF (RFC 6376 §3.4.1, §3.4.2). raw is the field as on the
// wire without the final CRLF, folding kept.
func canonHeader(algo, raw string) string {
	if algo == simple {
		return raw + "\r\n"
	}
	name, value, ok := strings.Cut(raw, ":")
	if !ok {
		// Not a field; it is hashed the way the signer most likely did.
		return strings.ToLower(strings.TrimRight(raw, " \t")) + ":\r\n"
	}
	// §3.4.2: lower-case the name, unfold, turn runs of WSP into one SP,
	// drop WSP at the end of the value and around the colon.
	var b strings.Builder
	b.Grow(len(raw) + 2)
	b.WriteString(strings.ToLower(strings.TrimRight(name, " \t")))
	b.WriteByte(':')
	wsp, started := false, false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n':
			// unfolding: CRLF goes, the WSP after it stays (as WSP)
		case ' ', '\t':
			wsp = true
		default:
			if wsp && started {
				b.WriteByte(' ')
			}
			wsp, started = false, true
			b.WriteByte(c)
		}
	}
	b.WriteString("\r\n")
	return b.String()
}

// bodyHasher canonicalizes a body as it streams through and hashes the
// first limit octets of the result (all of it when limit < 0; l=, RFC
// 6376 §3.4.5), counting the whole canonical length so that what lies past
// l= is known.
//
// Line ends: the gateway hands over CRLF; a bare LF (a file read from
// disk, the corpus's LF message) counts as CRLF, and a bare CR is content.
type bodyHasher struct {
	relaxed bool
	h       hash.Hash
	limit   int64
	n       int64 // canonical octets produced so far

	crPending   bool // a CR whose LF has not been seen yet
	atLineStart bool // nothing but (for relaxed) WSP since the last line end
	emptyLines  int  // empty lines held back: at the end of the body they go (§3.4.3, §3.4.4)
	wsp         bool // relaxed: WSP held back until non-WSP follows on the line
	out         []byte
}

func newBodyHasher(algo string, h hash.Hash, limit int64) *bodyHasher {
	return &bodyHasher{relaxed: algo == relaxed, h: h, limit: limit, atLineStart: true}
}

func (b *bodyHasher) Write(p []byte) (int, error) {
	b.out = b.out[:0]
	for _, c := range p {
		if b.crPending {
			b.crPending = false
			if c == '\n' {
				b.lineEnd()
				continue
			}
			b.content('\r')
		}
		switch c {
		case '\r':
			b.crPending = true
		case '\n':
			b.lineEnd()
		default:
			b.content(c)
		}
	}
	b.emit()
	return len(p), nil
}

func (b *bodyHasher) content(c byte) {
	if b.relaxed && (c == ' ' || c == '\t') {
		// §3.4.4: WSP at the end of a line goes, runs become one SP.
		b.wsp = true
		return
	}
	for ; b.emptyLines > 0; b.emptyLines-- {
		b.out = append(b.out, '\r', '\n')
	}
	if b.wsp {
		b.out = append(b.out, ' ')
		b.wsp = false
	}
	b.out = append(b.out, c)
	b.atLineStart = false
}

func (b *bodyHasher) lineEnd() {
	b.wsp = false
	if b.atLineStart {
		b.emptyLines++
		return
	}
	b.out = append(b.out, '\r', '\n')
	b.atLineStart = true
}

// emit hashes what Write produced, up to the limit.
func (b *bodyHasher) emit() {
	out := b.out
	if b.limit >= 0 && b.n < b.limit {
		b.h.Write(out[:min(int64(len(out)), b.limit-b.n)])
	} else if b.limit < 0 {
		b.h.Write(out)
	}
	b.n += int64(len(out))
}

// finish ends the body: a last line without CRLF gets one; an empty body
// is CRLF under simple and nothing under relaxed (§3.4.3, §3.4.4).
func (b *bodyHasher) finish() {
	b.out = b.out[:0]
	if b.crPending {
		b.crPending = false
		b.content('\r')
	}
	if !b.atLineStart {
		b.out = append(b.out, '\r', '\n')
		b.atLineStart = true
	} else if !b.relaxed && b.n == 0 && len(b.out) == 0 {
		b.out = append(b.out, '\r', '\n')
	}
	b.emit()
}
