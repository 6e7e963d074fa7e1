package spam

import (
	"net/netip"
	"regexp"
	"strings"

	"golang.org/x/net/idna"
	"golang.org/x/net/publicsuffix"
)

// uriPattern finds URLs in text: with an http, https or ftp scheme, or
// starting with "www." as mail readers linkify them.
var uriPattern = regexp.MustCompile(`(?i)\b(?:(?:https?|ftp)://|www\.)[^\s<>"'\x60{}|^]+`)

// findURIs returns the URLs written in text.
func findURIs(text string) []string {
	var out []string
	for _, m := range uriPattern.FindAllString(text, maxURIs) {
		// Sentence punctuation and closing brackets around a URL are not
		// part of it.
		m = strings.TrimRight(m, ".,;:!?)]>'\"*")
		if u := linkURI(m); u != "" {
			out = append(out, u)
		}
	}
	return out
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
	ascii, err := idna.Lookup.ToASCII(host)
	if err != nil || !strings.Contains(ascii, ".") {
		return ""
	}
	d, err := publicsuffix.EffectiveTLDPlusOne(ascii)
	if err != nil {
		return ""
	}
	return d
}
