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
		c.fail(w, view{}, http.StatusForbidden, "This request came from another site and was refused.")
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
			c.fail(w, view{}, http.StatusMisdirectedRequest, "This server does not serve that name.")
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
			c.fail(w, view{}, http.StatusUnsupportedMediaType, "Only a form of this console can be sent here.")
			return false
		}
	}
	if err := r.ParseForm(); err != nil {
		if _, ok := errors.AsType[*http.MaxBytesError](err); ok {
			c.fail(w, view{}, http.StatusRequestEntityTooLarge, "The form was too large.")
		} else {
			c.fail(w, view{}, http.StatusBadRequest, "The form could not be read.")
		}
		return false
	}
	return true
}

// clientAddr is the address of the client r comes from, for the login
// limits and the logs: the peer's, or, when the peer is one of [web]
// trusted_proxies, the last address of X-Forwarded-For that is not a
// proxy (those before it are whatever the client wrote).
func (c *Console) clientAddr(r *http.Request) netip.Addr {
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}
	}
	addr := ap.Addr().Unmap()
	proxies := c.opts.Config().Web.Proxies()
	trusted := func(a netip.Addr) bool {
		return slices.ContainsFunc(proxies, func(p netip.Prefix) bool { return p.Contains(a) })
	}
	if !trusted(addr) {
		return addr
	}
	var hops []string
	for _, v := range r.Header.Values("X-Forwarded-For") {
		hops = append(hops, strings.Split(v, ",")...)
	}
	for i := len(hops) - 1; i >= 0; i-- {
		a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
		if err != nil {
			return addr // not one the proxies wrote: the last proxy's
		}
		if addr = a.Unmap(); !trusted(addr) {
			return addr
		}
	}
	return addr
}

// ownHost reports whether r is addressed to the console. With [web]
// base_url or hosts, its Host (any port: behind a proxy the port is the
// proxy's) must be one of those names, a loopback address or localhost
// as much as any other; with neither, listen's host, the address the
// client connected to, or, on a loopback connection, a loopback address
// or localhost. A page whose own name an attacker points at the
// console's address (DNS rebinding) is refused: its Host is the
// attacker's name.
func (c *Console) ownHost(r *http.Request) bool {
	name := r.Host
	if h, _, err := net.SplitHostPort(name); err == nil {
		name = h
	}
	name = strings.ToLower(strings.TrimSuffix(strings.TrimSuffix(strings.TrimPrefix(name, "["), "]"), "."))
	if name == "" {
		return false
	}
	w := c.opts.Config().Web
	names := slices.Clone(w.Hosts)
	if u, err := url.Parse(w.BaseURL); err == nil && w.BaseURL != "" {
		names = append(names, u.Hostname())
	}
	if len(names) == 0 {
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
		if h, _, err := net.SplitHostPort(w.Listen); err == nil && h != "" {
			names = append(names, h)
		}
	}
	return slices.ContainsFunc(names, func(n string) bool {
		return strings.EqualFold(strings.TrimSuffix(strings.Trim(n, "[]"), "."), name)
	})
}
