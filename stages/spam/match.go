package spam

import (
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"
	"unicode/utf8"
)

// textMatcher runs a body rule's regular expression over the decoded text.
// Go's regexp runs in time linear in the text, but with a large constant
// for alternations and (?i): a whole 100 KiB message took about 5 ms per
// rule. Most rules name words, though, and cannot match a text that holds
// none of them. So the matcher first looks for the literals every match
// must contain (plain substring search, which is fast), and only where one
// occurs runs the expression: on that line alone when no match can span a
// line, else on the whole text. The answer is always the expression's own.
type textMatcher struct {
	re *regexp.Regexp
	// lits are strings of which every match contains at least one; nil
	// when the expression has no such set (then it always runs).
	lits []literal
	// oneLine is true when no match can contain a line break or depend on
	// where the text begins or ends (\A, \z, ^ and $ without (?m)), so
	// that a line's matches are the same alone as within the text.
	oneLine bool
}

// literal is a required string; fold ones are ASCII, lower case, and are
// looked for in the text lower-cased.
type literal struct {
	s    string
	fold bool
}

// maxLiterals bounds the set: past it, the searches cost more than they
// save.
const maxLiterals = 32

func newTextMatcher(re *regexp.Regexp) *textMatcher {
	m := &textMatcher{re: re}
	parsed, err := syntax.Parse(re.String(), syntax.Perl)
	if err != nil {
		return m // cannot happen for a compiled expression; run it always
	}
	// Not simplified: Simplify spells "!{4,}" as "!!!!+" in four parts.
	if lits, ok := required(parsed); ok {
		m.lits = lits
	}
	m.oneLine = oneLine(parsed)
	return m
}

// scanText is the text rules look at, with its ASCII lower-case form.
type scanText struct {
	text, lower string
	// foldSafe is false when the text holds a character that (?i) matches
	// with an ASCII letter but lower-casing ASCII does not reach: the
	// Kelvin sign K (k) and the long s ſ (s). Fold literals are then not
	// searched for and expressions run on the whole text.
	foldSafe bool
}

func newScanText(text, lower string) scanText {
	return scanText{text: text, lower: lower, foldSafe: !strings.Contains(text, "\u212a") && !strings.Contains(text, "\u017f")}
}

func (m *textMatcher) match(t scanText) bool {
	if m.lits == nil {
		return m.re.MatchString(t.text)
	}
	var lines []int // starts of the lines holding a literal
	for _, l := range m.lits {
		s := t.text
		if l.fold {
			if !t.foldSafe {
				return m.re.MatchString(t.text)
			}
			s = t.lower
		}
		for i := 0; ; {
			j := strings.Index(s[i:], l.s)
			if j < 0 {
				break
			}
			if !m.oneLine {
				return m.re.MatchString(t.text)
			}
			start := strings.LastIndexByte(s[:i+j], '\n') + 1
			lines = append(lines, start)
			// The rest of this line is looked at anyway.
			end := strings.IndexByte(s[i+j:], '\n')
			if end < 0 {
				break
			}
			i += j + end + 1
		}
	}
	slices.Sort(lines)
	for _, start := range slices.Compact(lines) {
		line := t.text[start:]
		if end := strings.IndexByte(line, '\n'); end >= 0 {
			line = line[:end]
		}
		if m.re.MatchString(line) {
			return true
		}
	}
	return false
}

// required returns a set of strings of which every match of re contains at
// least one, if it finds one.
func required(re *syntax.Regexp) ([]literal, bool) {
	switch re.Op {
	case syntax.OpLiteral:
		fold := re.Flags&syntax.FoldCase != 0
		s := string(re.Rune)
		if fold {
			// Under (?i) a non-ASCII letter matches forms lower-casing
			// ASCII does not give.
			for _, r := range re.Rune {
				if r >= utf8.RuneSelf {
					return nil, false
				}
			}
			s = lowerASCII(s)
		}
		return []literal{{s, fold}}, true
	case syntax.OpCapture, syntax.OpPlus:
		return required(re.Sub[0])
	case syntax.OpRepeat:
		if re.Min < 1 {
			return nil, false
		}
		lits, ok := required(re.Sub[0])
		if ok && re.Sub[0].Op == syntax.OpLiteral {
			// "!{4,}": four of them in a row.
			lits[0].s = strings.Repeat(lits[0].s, min(re.Min, 8))
		}
		return lits, ok
	case syntax.OpConcat:
		var best []literal
		for _, sub := range re.Sub {
			if lits, ok := required(sub); ok && better(lits, best) {
				best = lits
			}
		}
		return best, best != nil
	case syntax.OpAlternate:
		var all []literal
		for _, sub := range re.Sub {
			lits, ok := required(sub)
			if !ok || len(all)+len(lits) > maxLiterals {
				return nil, false
			}
			all = append(all, lits...)
		}
		return all, true
	}
	return nil, false
}

// better reports whether a is a more selective set than b: its shortest
// string is longer, or as long in fewer strings.
func better(a, b []literal) bool {
	if b == nil {
		return true
	}
	la, lb := shortest(a), shortest(b)
	return la > lb || la == lb && len(a) < len(b)
}

func shortest(lits []literal) int {
	n := len(lits[0].s)
	for _, l := range lits[1:] {
		n = min(n, len(l.s))
	}
	return n
}

// oneLine reports whether no match of re can hold a line break or depend on
// the beginning or end of the text.
func oneLine(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpAnyChar, syntax.OpBeginText, syntax.OpEndText:
		return false
	case syntax.OpLiteral:
		return !slices.Contains(re.Rune, '\n')
	case syntax.OpCharClass:
		for i := 0; i+1 < len(re.Rune); i += 2 {
			if re.Rune[i] <= '\n' && '\n' <= re.Rune[i+1] {
				return false
			}
		}
	}
	for _, sub := range re.Sub {
		if !oneLine(sub) {
			return false
		}
	}
	return true
}

// lowerASCII lower-cases the ASCII letters of s and leaves every other
// byte where it is, so that offsets in the result are offsets in s.
func lowerASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
