package spam

import (
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"

	"github.com/mailgate/mailgate/stages/address"
)

// findURIs returns the URLs written in text: the ones with an http, https
// or ftp scheme, and the ones starting with "www." as mail readers linkify
// them. lower is text with its ASCII letters lower-cased.
//
// It finds what the expression
//
//	(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'\x60{}|^]+
//
// finds, by searching for "://" and "www." rather than trying the
// expression at every byte, which made this the second cost of the whole
// stage.
func findURIs(text, lower string) []string {
	var out []string
	scheme, www := indexFrom(lower, "://", 0), indexFrom(lower, "www.", 0)
	for pos, found := 0, 0; found < maxURIs; {
		// The next "://" after a scheme name that starts a word, and the
		// next "www." that starts a word, at or after pos.
		for scheme >= 0 && schemeStart(lower, scheme) < pos {
			scheme = indexFrom(lower, "://", scheme+1)
		}
		for www >= 0 && (www < pos || !wordStart(lower, www)) {
			www = indexFrom(lower, "www.", www+1)
		}
		var start, prefix int
		switch {
		case scheme >= 0 && (www < 0 || schemeStart(lower, scheme) < www):
			start = schemeStart(lower, scheme)
			prefix = scheme + len("://") - start
		case www >= 0:
			start, prefix = www, len("www.")
		default:
			return out
		}
		end := start + prefix
		for end < len(text) && !uriStop(text[end]) {
			end++
		}
		if end == start+prefix {
			// Nothing after the prefix: no URL starts here.
			pos = start + 1
			continue
		}
		// Sentence punctuation and closing brackets around a URL are not
		// part of it.
		m := strings.TrimRight(text[start:end], ".,;:!?)]>'\"*")
		if u := linkURI(m); u != "" {
			out = append(out, u)
		}
		pos = end
		found++
	}
	return out
}

// indexFrom is strings.Index of sep in s[from:], as an offset in s.
func indexFrom(s, sep string, from int) int {
	if i := strings.Index(s[from:], sep); i >= 0 {
		return from + i
	}
	return -1
}

// schemeStart returns where the scheme name before the "://" at i starts,
// or -1 if there is none that starts a word.
func schemeStart(lower string, i int) int {
	for _, name := range []string{"https", "http", "ftp"} {
		if strings.HasSuffix(lower[:i], name) {
			if start := i - len(name); wordStart(lower, start) {
				return start
			}
			return -1
		}
	}
	return -1
}

// wordStart reports whether a word begins at i: the byte before is not a
// word character (\b of regexp, which knows ASCII words only).
func wordStart(s string, i int) bool {
	if i == 0 {
		return true
	}
	c := s[i-1]
	return !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_')
}

// uriStop reports whether c ends a URL in text: white space (\s of regexp)
// or one of the characters that never appear unquoted in one.
func uriStop(c byte) bool {
	switch c {
	case '\t', '\n', '\f', '\r', ' ', '<', '>', '"', '\'', '`', '{', '}', '|', '^':
		return true
	}
	return false
}

// linkURI returns the URL of a link target that leads to a host: http,
// https and ftp URLs as they are, "//host/..." and "www.host" made http
// URLs. Other targets (mailto:, relative paths, anchors) give "".
func linkURI(v string) string {
	v = strings.TrimSpace(v)
	lower := strings.ToLower(v)
	switch {
	case strings.HasPrefix(lower, "http://"), strings.HasPrefix(lower, "https://"), strings.HasPrefix(lower, "ftp://"):
	case strings.HasPrefix(lower, "//"):
		v = "http:" + v
	case strings.HasPrefix(lower, "www."):
		v = "http://" + v
	default:
		return ""
	}
	if uriHost(v) == "" {
		return ""
	}
	return v
}

// uriHost returns the lower-case host of a URL as a browser would read it:
// without user info, port or IPv6 brackets, a backslash ending it like a
// slash. "" if there is none.
func uriHost(u string) string {
	_, rest, ok := strings.Cut(u, "://")
	if !ok {
		return ""
	}
	if end := strings.IndexAny(rest, `/?#\`); end >= 0 {
		rest = rest[:end]
	}
	if i := strings.LastIndexByte(rest, '@'); i >= 0 {
		rest = rest[i+1:]
	}
	if v6, ok := strings.CutPrefix(rest, "["); ok {
		host, _, ok := strings.Cut(v6, "]")
		if !ok {
			return ""
		}
		return strings.ToLower(host)
	}
	host, _, _ := strings.Cut(rest, ":")
	return strings.TrimSuffix(strings.ToLower(host), ".")
}

// uriDomain returns the registrable domain of a URL host, the part a
// URI blocklist lists: one label more than the public suffix by the Public
// Suffix List (so "www.shop.example.co.uk" gives "example.co.uk"). Hosts
// that are IP addresses or not domain names give "".
func uriDomain(host string) string {
	if _, err := netip.ParseAddr(host); err == nil {
		return ""
	}
	ascii, err := address.Domain(host)
	if err != nil || !strings.Contains(ascii, ".") || strings.HasPrefix(ascii, "[") {
		return ""
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(ascii)
	if err != nil {
		return ""
	}
	return d
}
