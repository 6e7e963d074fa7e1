// Package dkimcore is the one implementation of the DKIM machinery (RFC
// 6376) in mailgate: tag lists, header and body canonicalization, the
// choice of signed fields, key records and their lookup, and the
// signature algorithms (RFC 8463 for Ed25519, RFC 8301 for what is no
// longer accepted). The dkim stage verifies DKIM-Signature fields with it,
// the dkim-sign stage makes them, and the arc stage verifies and makes ARC
// signatures and seals (RFC 8617), which are DKIM signatures under other
// rules. It knows nothing of a DKIM-Signature's own tags (v=, i=, the
// required ones); those belong to the caller.
//
// Every function here bounds its work by its input: nothing loops over
// more than the bytes it is given, and SignedFields is linear in the
// header and the h= list however h= repeats names.
package dkimcore

import (
	"errors"
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Tag is one tag-spec of a tag list: its name and its value with the
// surrounding white space removed. Start and End are the byte offsets in
// the text parsed of everything between the '=' and the ';' that ends the
// tag (or the end of the text), so that a signer or verifier can blank b=
// in the header as it was received (see BlankTag).
type Tag struct {
	Name, Value string
	Start, End  int
}

// Tags is a parsed tag list in the order written.
type Tags []Tag

// Get returns the value of tag name (names are case-sensitive, RFC 6376
// §3.2) and whether it is present.
func (ts Tags) Get(name string) (string, bool) {
	for _, t := range ts {
		if t.Name == name {
			return t.Value, true
		}
	}
	return "", false
}

// Find returns the tag called name, or nil.
func (ts Tags) Find(name string) *Tag {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i]
		}
	}
	return nil
}

// maxTags bounds the tags of one list: a DKIM or ARC header has about ten;
// a list of thousands is an attack on whoever parses it.
const maxTags = 64

// ParseTags parses a tag list (RFC 6376 §3.2):
//
//	tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//	tag-name  =  ALPHA *ALNUMPUNC            ; ALNUMPUNC = ALPHA / DIGIT / "_"
//	tag-value =  [ tval *( 1*(WSP / FWS) tval ) ]
//	tval      =  1*VALCHAR                   ; VALCHAR = %x21-3A / %x3C-7E
//
// A tag named twice makes the list invalid ("Tags with duplicate names
// MUST NOT occur within a single tag-list"), and so does an empty
// tag-spec (";;"): only one trailing ";" is allowed. s may be folded
// (CRLF followed by white space).
func ParseTags(s string) (Tags, error) {
	var ts Tags
	i := 0
	for {
		i = skipFWS(s, i)
		if i == len(s) {
			if len(ts) == 0 {
				return nil, errors.New("empty tag list")
			}
			return ts, nil // after a trailing ";"
		}
		start := i
		if !isAlpha(s[i]) {
			return nil, fmt.Errorf("invalid tag name at %q", clip(s[i:]))
		}
		for i < len(s) && (isAlpha(s[i]) || isDigit(s[i]) || s[i] == '_') {
			i++
		}
		name := s[start:i]
		i = skipFWS(s, i)
		if i == len(s) || s[i] != '=' {
			return nil, fmt.Errorf("tag %q: no '='", clip(name))
		}
		rawStart := i + 1
		i = skipFWS(s, i+1)
		vStart, vEnd := i, i
		for i < len(s) && s[i] != ';' {
			c := s[i]
			switch {
			case c >= 0x21 && c <= 0x7e: // VALCHAR; ';' ends the value
				i++
				vEnd = i
			case c == ' ' || c == '\t':
				i++
			case c == '\r' && i+2 < len(s) && s[i+1] == '\n' && (s[i+2] == ' ' || s[i+2] == '\t'):
				i += 2
			default:
				return nil, fmt.Errorf("tag %q: invalid character %q in value", clip(name), c)
			}
		}
		for _, t := range ts {
			if t.Name == name {
				return nil, fmt.Errorf("tag %q twice", clip(name))
			}
		}
		if len(ts) == maxTags {
			return nil, fmt.Errorf("more than %d tags", maxTags)
		}
		ts = append(ts, Tag{Name: name, Value: s[vStart:vEnd], Start: rawStart, End: i})
		if i == len(s) {
			return ts, nil
		}
		i++ // the ';'
	}
}

// skipFWS skips white space and folds from s[i].
func skipFWS(s string, i int) int {
	for i < len(s) {
		switch {
		case s[i] == ' ' || s[i] == '\t':
			i++
		case s[i] == '\r' && i+2 < len(s) && s[i+1] == '\n' && (s[i+2] == ' ' || s[i+2] == '\t'):
			i += 2
		default:
			return i
		}
	}
	return i
}

// StripFWS removes all white space from a value such as b=, bh= or p=,
// where RFC 6376 §3.5 and §3.6.1 allow FWS between the base64 characters.
func StripFWS(v string) string {
	if !strings.ContainsAny(v, " \t\r\n") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		if c := v[i]; c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			b.WriteByte(c)
		}
	}
	return b.String()
}

// BlankTag returns s with the value of tag t removed, the tag name and
// '=' and everything around them kept (RFC 6376 §3.5, b=: "the value of
// the b= tag (including all surrounding whitespace) is deleted (i.e.,
// treated as the empty string)"; the relaxed canonicalization that
// follows makes the surrounding white space irrelevant).
func BlankTag(s string, t *Tag) string {
	return s[:t.Start] + s[t.End:]
}

// BlankField returns field f as it goes on the wire (f.Raw) with the value
// of tag t blanked as BlankTag does; t is a tag of f.Value, which is the
// end of the raw field.
func BlankField(f stages.Field, t *Tag) string {
	raw := f.Raw()
	return raw[:len(raw)-len(f.Value)] + BlankTag(f.Value, t)
}

// DecodeQP decodes dkim-quoted-printable (RFC 6376 §2.11), the form of
// i= and z=: "=XX" is the octet XX, white space is dropped.
func DecodeQP(s string) (string, error) {
	s = StripFWS(s)
	if !strings.Contains(s, "=") {
		return s, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '=' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) || !isHex(s[i+1]) || !isHex(s[i+2]) {
			return "", errors.New("bad quoted-printable")
		}
		b.WriteByte(unhex(s[i+1])<<4 | unhex(s[i+2]))
		i += 2
	}
	return b.String(), nil
}

func isHex(c byte) bool { return isDigit(c) || 'A' <= c && c <= 'F' || 'a' <= c && c <= 'f' }

func unhex(c byte) byte {
	switch {
	case isDigit(c):
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

// SplitList splits a colon-separated list (h=, q=, and a key record's h=,
// s= and t=) into its elements, white space removed; empty elements
// ("from::to") are dropped.
func SplitList(v string) []string {
	var out []string
	for _, s := range strings.Split(StripFWS(v), ":") {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func isAlpha(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// clip shortens attacker-supplied text quoted in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}

// ValidDomain accepts a d= or s= value as a domain name: dot-separated
// labels of letters, digits, hyphens and underscores (RFC 6376 §3.5
// domain-name, §3.1 selector, which allows underscores), each 1 to 63
// characters, 253 in all.
func ValidDomain(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for _, l := range strings.Split(d, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for i := 0; i < len(l); i++ {
			if c := l[i]; !isAlpha(c) && !isDigit(c) && c != '-' && c != '_' {
				return false
			}
		}
	}
	return true
}
