package console

import (
	"errors"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
)

// contentSecurityPolicy lets a page load the console's own style sheet,
// script and images and nothing else: no inline script or style (so no
// text that reaches a page can run or restyle it), no frames, no form
// posting elsewhere.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"

// guard checks what every request must pass, before any page: the Host
// (421 for a name the console does not have), and for a change (POST),
// that it comes from the console's own pages (403); and it sets the
// security headers of every response.
func (c *Console) guard(next http.Handler) http.Handler {
	xorigin := http.NewCrossOriginProtection()
	xorigin.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c.fail(w, r, http.StatusForbidden, "This request came from another site and was refused.")
	}))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("X-Frame-Options", "DENY")
		// An end user's link is a credential: it must not leave in a
		// Referer.
		h.Set("Referrer-Policy", "no-referrer")
		h.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.Set("Cross-Origin-Resource-Policy", "same-origin")
		h.Set("Cache-Control", "no-store")
		if c.secure(r) {
			h.Set("Strict-Transport-Security", "max-age=31536000")
		}
		if !c.ownHost(r) {
			// RFC 9110 §15.5.20. The Host is the client's text: not
			// echoed.
			c.fail(w, r, http.StatusMisdirectedRequest, "This server does not serve that name.")
			return
		}
		if !c.readForm(w, r) {
			return
		}
		xorigin.Handler(next).ServeHTTP(w, r)
	})
}

// maxBody bounds what a request may send: the console's forms are small.
const maxBody = 64 << 10

// readForm reads a request's form before any page, within maxBody: a
// POST must be a urlencoded form (415 otherwise: a multipart body, which
// Go would spool to a temporary file, is refused unread), and a body over
// the bound gets 413. The pages then read r.PostForm, never the body.
func (c *Console) readForm(w http.ResponseWriter, r *http.Request) bool {
	r.Body = http.MaxBytesReader(w, r.Body, maxBody)
	if r.Method == http.MethodPost {
		mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
		if err != nil || mt != "application/x-www-form-urlencoded" {
			c.fail(w, r, http.StatusUnsupportedMediaType, "Only a form of this console can be sent here.")
			return false
		}
	}
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			c.fail(w, r, http.StatusRequestEntityTooLarge, "The form was too large.")
		} else {
			c.fail(w, r, http.StatusBadRequest, "The form could not be read.")
		}
		return false
	}
	return true
}

// clientAddr is the address of the client r comes from, for the login
// limits and the logs.
func (c *Console) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

// ownHost reports whether r is addressed to the console: its Host (any
// port: behind a proxy the port is the proxy's) is one of [web] hosts,
// base_url's host or listen's host; the address the client connected to;
// or, on a loopback connection, a loopback address or localhost. A page
// whose own name an attacker points at the console's address (DNS
// rebinding) is refused: its Host is the attacker's name.
func (c *Console) ownHost(r *http.Request) bool {
	name := r.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"), "."))
	if name == "" {
		return false
	}
	var local netip.Addr
	if a, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		if ap, err := netip.ParseAddrPort(a.String()); err == nil {
			local = ap.Addr().Unmap()
		}
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		ip = ip.Unmap()
		if ip == local || ip.IsLoopback() && local.IsLoopback() {
			return true
		}
	} else if name == "localhost" && local.IsLoopback() {
		return true
	}
	w := c.opts.Config().Web
	names := slices.Clone(w.Hosts)
	if u, err := url.Parse(w.BaseURL); err == nil && w.BaseURL != "" {
		names = append(names, u.Hostname())
	}
	if h, _, err := net.SplitHostPort(w.Listen); err == nil && h != "" {
		names = append(names, h)
	}
	return slices.ContainsFunc(names, func(n string) bool {
		return strings.EqualFold(strings.TrimSuffix(strings.Trim(n, "[]"), "."), name)
	})
}
