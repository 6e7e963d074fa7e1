// Package authres reads and writes Authentication-Results (RFC 8601
// §2.2): a header field's value, and the resinfo entries that the
// authentication stages (spf, dkim, dmarc, arc) write as their verdict's
// reason for later stages to read. It is mailgate's one reader and writer
// of the format: spf, dkim, dmarc and arc write their reasons with Format;
// the headers stage reads them with ParseResults to build the gateway's
// own field (FormatField) and finds forged fields with ParseField; dmarc
// reads the spf and dkim results with ParseResults; arc reads them again
// for its ARC-Authentication-Results, whose payload is a FormatField
// value (RFC 8617 §4.1.1). A plugin that declares NeedResults can read
// earlier stages' reasons with ParseResults too.
//
// The grammar is RFC 8601's: comments and folding white space anywhere
// between tokens, quoted strings, an authres-version after the
// authserv-id, method/version, reason=, and ptype.property=pvalue pairs.
// Any method and ptype is read (new ones are registered with IANA, RFC
// 8601 §2.7, RFC 7410); a reader picks the methods it knows and ignores
// the rest. Where senders commonly stray from the grammar, the reader is
// lenient, as MTAs reading real mail must be: a pvalue is any run of
// characters up to white space, ";" or a comment (so header.b=ab/c+=
// reads), a quoted string may be followed by "@domain" (a quoted
// local-part), and empty entries and a trailing ";" are passed over.
//
// go-msgauth's authres (v0.7.0) is not used: its reader splits entries at
// every ";" and properties at white space, inside quoted strings and
// comments too, keeps only the properties it knows for a method (no
// header.s or header.b for DKIM) and refuses a version other than 1; its
// writer escapes no backslash and keeps control characters.
package authres

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Field is a parsed Authentication-Results value.
type Field struct {
	AuthServID string   // unquoted
	Version    int      // authres-version; 1 when absent
	Results    []Result // none for "none"
}

// Result is one resinfo: "method=result reason=... ptype.property=value".
type Result struct {
	Method        string // lower case, such as "dkim"
	MethodVersion int    // the method's version ("dkim/1"); 1 when absent
	Value         string // the result, lower case, such as "pass"
	Reason        string // reason=, unquoted; "" without one
	Props         []Prop // in the order written
}

// Prop is one ptype.property=pvalue of a Result.
type Prop struct {
	Key   string // "ptype.property", lower case: "smtp.mailfrom", "header.d"
	Value string // unquoted
}

// Type is the property's ptype: "smtp", "header", "body", "policy" (RFC
// 8601 §2.3), or another registered since (RFC 7410).
func (p Prop) Type() string {
	t, _, _ := strings.Cut(p.Key, ".")
	return t
}

// Get returns the value of the first property called key ("header.d",
// compared without regard to case), "" if there is none.
func (r Result) Get(key string) string {
	for _, p := range r.Props {
		if strings.EqualFold(p.Key, key) {
			return p.Value
		}
	}
	return ""
}

// ParseField reads the value of an Authentication-Results field (what
// follows the colon; folds may stay). On an error it returns what it read
// before: the authserv-id as soon as it is read, and every entry before
// the one that does not parse, so that a caller can still tell whose field
// a malformed one claims to be.
func ParseField(v string) (Field, error) {
	p := &parser{s: v}
	f := Field{Version: 1}
	if err := p.cfws(); err != nil {
		return f, err
	}
	id, err := p.value()
	if err != nil {
		return f, fmt.Errorf("authserv-id: %w", err)
	}
	f.AuthServID = id
	if err := p.cfws(); err != nil {
		return f, err
	}
	if d := p.digits(); d != "" {
		n, err := strconv.Atoi(d)
		if err != nil {
			return f, fmt.Errorf("version %q: %w", clip(d), err)
		}
		f.Version = n
		if err := p.cfws(); err != nil {
			return f, err
		}
	}
	if p.eof() {
		return f, errors.New("no results and no \"none\"")
	}
	if p.s[p.i] != ';' {
		return f, p.unexpected("\";\" after the authserv-id")
	}
	f.Results, err = p.results()
	return f, err
}

// ParseResults reads resinfo entries separated by ";", the first without
// a ";" before it: "spf=pass smtp.mailfrom=example.org; dkim=none", as
// stages write their reasons. A lone "none" is no entry. On an error it
// returns the entries before the one that does not parse.
func ParseResults(s string) ([]Result, error) {
	p := &parser{s: ";" + s}
	return p.results()
}

// parser reads s from i on.
type parser struct {
	s string
	i int
}

// results reads ";" resinfo, repeated to the end; "; none" alone is no
// result (RFC 8601 §2.2, no-result).
func (p *parser) results() ([]Result, error) {
	var out []Result
	for {
		if err := p.cfws(); err != nil {
			return out, err
		}
		if p.eof() {
			return out, nil
		}
		if p.s[p.i] != ';' {
			return out, p.unexpected("\";\" between results")
		}
		p.i++
		if err := p.cfws(); err != nil {
			return out, err
		}
		if p.eof() || p.s[p.i] == ';' {
			continue // an empty entry, or a trailing ";"
		}
		start := p.i
		if w := p.keyword(); strings.EqualFold(w, "none") && len(out) == 0 {
			save := p.i
			if err := p.cfws(); err == nil && p.eof() {
				return nil, nil
			}
			p.i = save
		}
		p.i = start
		r, err := p.resinfo()
		if err != nil {
			return out, err
		}
		out = append(out, r)
	}
}

// resinfo reads methodspec [reasonspec] *propspec, up to the next ";" or
// the end.
func (p *parser) resinfo() (Result, error) {
	r := Result{MethodVersion: 1}
	if r.Method = strings.ToLower(p.keyword()); r.Method == "" {
		return r, p.unexpected("a method")
	}
	if err := p.cfws(); err != nil {
		return r, err
	}
	if p.at('/') {
		p.i++
		if err := p.cfws(); err != nil {
			return r, err
		}
		d := p.digits()
		n, err := strconv.Atoi(d)
		if err != nil {
			return r, p.unexpected("a method version")
		}
		r.MethodVersion = n
		if err := p.cfws(); err != nil {
			return r, err
		}
	}
	if !p.at('=') {
		return r, p.unexpected("\"=\" after the method")
	}
	p.i++
	if err := p.cfws(); err != nil {
		return r, err
	}
	if r.Value = strings.ToLower(p.keyword()); r.Value == "" {
		return r, p.unexpected("a result")
	}
	for {
		if err := p.cfws(); err != nil {
			return r, err
		}
		if p.eof() || p.at(';') {
			return r, nil
		}
		word := strings.ToLower(p.keyword())
		if word == "" {
			return r, p.unexpected("a property")
		}
		if err := p.cfws(); err != nil {
			return r, err
		}
		var prop Prop
		isReason := word == "reason" && p.at('=')
		if !isReason {
			if !p.at('.') {
				return r, p.unexpected("\".\" after ptype " + clip(word))
			}
			p.i++
			if err := p.cfws(); err != nil {
				return r, err
			}
			name := strings.ToLower(p.keyword())
			if name == "" {
				return r, p.unexpected("a property name")
			}
			prop.Key = word + "." + name
			if err := p.cfws(); err != nil {
				return r, err
			}
			if !p.at('=') {
				return r, p.unexpected("\"=\" after " + clip(prop.Key))
			}
		}
		p.i++ // the "="
		if err := p.cfws(); err != nil {
			return r, err
		}
		v, err := p.value()
		if err != nil {
			return r, err
		}
		if isReason {
			r.Reason = v
			continue
		}
		prop.Value = v
		r.Props = append(r.Props, prop)
	}
}

func (p *parser) eof() bool      { return p.i >= len(p.s) }
func (p *parser) at(c byte) bool { return p.i < len(p.s) && p.s[p.i] == c }

func (p *parser) unexpected(want string) error {
	if p.eof() {
		return fmt.Errorf("expect %s at the end", want)
	}
	return fmt.Errorf("expect %s at %q", want, clip(p.s[p.i:]))
}

// cfws skips white space, folds and comments (RFC 5322 §3.2.2: comments
// nest, and a backslash quotes the next character).
func (p *parser) cfws() error {
	for p.i < len(p.s) {
		switch p.s[p.i] {
		case ' ', '\t', '\r', '\n':
			p.i++
		case '(':
			depth := 0
			for ; ; p.i++ {
				if p.i >= len(p.s) {
					return errors.New("unterminated comment")
				}
				switch p.s[p.i] {
				case '\\':
					p.i++
				case '(':
					depth++
				case ')':
					depth--
				}
				if depth == 0 {
					p.i++
					break
				}
			}
		default:
			return nil
		}
	}
	return nil
}

// keyword reads letters, digits, "-" and "_" (RFC 8601 Keyword, an
// ldh-str; "_" as some senders write it), "" if there are none.
func (p *parser) keyword() string {
	start := p.i
	for p.i < len(p.s) {
		c := p.s[p.i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			break
		}
		p.i++
	}
	return p.s[start:p.i]
}

func (p *parser) digits() string {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
		p.i++
	}
	return p.s[start:p.i]
}

// value reads a value, a pvalue or the authserv-id: a quoted string
// (unquoted, possibly followed by "@domain": a quoted local-part), or a
// run of characters up to white space, ";", a comment or a quote.
func (p *parser) value() (string, error) {
	var b strings.Builder
	if p.at('"') {
		for p.i++; ; p.i++ {
			if p.i >= len(p.s) {
				return "", errors.New("unterminated quoted string")
			}
			c := p.s[p.i]
			if c == '"' {
				p.i++
				break
			}
			if c == '\\' && p.i+1 < len(p.s) {
				p.i++
				c = p.s[p.i]
			}
			if c != '\r' && c != '\n' { // a fold inside the quotes
				b.WriteByte(c)
			}
		}
		if !p.at('@') {
			return b.String(), nil
		}
	}
	start := p.i
	for p.i < len(p.s) && !strings.ContainsRune(" \t\r\n;(\"", rune(p.s[p.i])) {
		p.i++
	}
	if start == p.i && b.Len() == 0 {
		return "", p.unexpected("a value")
	}
	b.WriteString(p.s[start:p.i])
	return b.String(), nil
}

// clip shortens text quoted from a field in an error.
func clip(s string) string {
	if len(s) > 40 {
		return s[:40] + "..."
	}
	return s
}
