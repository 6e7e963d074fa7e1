package dkim

import (
	"errors"
	"fmt"
	"strings"
)

// tag is one tag=value pair of a DKIM tag list, with where its value sits
// in the text parsed, so that the signature's b= value can be cut out of
// the field exactly (RFC 6376 §3.7).
type tag struct {
	name, value string // value without the FWS around it
	start, end  int    // the value's span in the parsed text
}

// tagList is a parsed tag list, in order.
type tagList []tag

// get returns the value of the tag called name and whether it is there.
func (l tagList) get(name string) (string, bool) {
	for _, t := range l {
		if t.name == name {
			return t.value, true
		}
	}
	return "", false
}

// maxTags bounds the tags of one list: a signature or key record has about
// a dozen; more is an attack on the parser's time, not a signature.
const maxTags = 64

// parseTags parses a tag list (RFC 6376 §3.2):
//
//	tag-list  =  tag-spec *( ";" tag-spec ) [ ";" ]
//	tag-spec  =  [FWS] tag-name [FWS] "=" [FWS] tag-value [FWS]
//	tag-name  =  ALPHA *ALNUMPUNC
//
// Tag names are case-sensitive; a tag given twice makes the whole list
// invalid (§3.2: "MUST be interpreted as a syntax error"). Empty specs
// (";;") are passed over, as most verifiers do.
func parseTags(s string) (tagList, error) {
	var tags tagList
	pos := 0
	for pos <= len(s) {
		end := strings.IndexByte(s[pos:], ';')
		if end < 0 {
			end = len(s)
		} else {
			end += pos
		}
		spec := s[pos:end]
		if strings.TrimLeft(spec, " \t\r\n") != "" {
			eq := strings.IndexByte(spec, '=')
			if eq < 0 {
				return nil, fmt.Errorf("tag %q has no value", clip(strings.TrimSpace(spec)))
			}
			name := strings.Trim(spec[:eq], " \t\r\n")
			if !isTagName(name) {
				return nil, fmt.Errorf("bad tag name %q", clip(name))
			}
			if _, dup := tags.get(name); dup {
				return nil, fmt.Errorf("tag %s given twice", name)
			}
			if len(tags) == maxTags {
				return nil, errors.New("too many tags")
			}
			v := spec[eq+1:]
			lead := len(v) - len(strings.TrimLeft(v, " \t\r\n"))
			v = strings.Trim(v, " \t\r\n")
			start := pos + eq + 1 + lead
			tags = append(tags, tag{name: name, value: v, start: start, end: start + len(v)})
		}
		pos = end + 1
	}
	return tags, nil
}

func isTagName(s string) bool {
	if s == "" || !isAlpha(s[0]) {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlpha(c) && !isDigit(c) && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' }
func isDigit(c byte) bool { return '0' <= c && c <= '9' }

// stripFWS removes folding white space, which RFC 6376 allows anywhere in
// base64 values and colon-separated lists.
func stripFWS(s string) string {
	if !strings.ContainsAny(s, " \t\r\n") {
		return s
	}
	return strings.Map(func(r rune) rune {
		if r == ' ' || r == '\t' || r == '\r' || r == '\n' {
			return -1
		}
		return r
	}, s)
}

// splitList splits a colon-separated list (h=, q=, and the key record's h=,
// s=, t=) into its elements without FWS.
func splitList(s string) []string {
	return strings.Split(stripFWS(s), ":")
}

// decodeQP decodes dkim-quoted-printable (RFC 6376 §2.11), used by i= and
// z=: "=XX" is the octet XX, FWS is dropped.
func decodeQP(s string) (string, error) {
	s = stripFWS(s)
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

// clip shortens text quoted from a message or DNS in a problem, so that a
// huge field does not make a huge reason.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
