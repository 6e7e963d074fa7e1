package console

import (
	"bytes"
	"context"
	"embed"
	"errors"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/state"
)

//go:embed templates static
var assets embed.FS

// view is what every page template gets.
type view struct {
	Title string
	Nav   string          // the menu entry to mark
	User  *policy.WebUser // the admin or auditor logged in; nil on other pages
	Rcpt  string          // the end user of a link page
	Token string          // the link's token, on an end user's pages
	Link  *Link           // what it grants
	CSRF  string          // the token forms carry
	// Refresh reloads the page after this many seconds (the dashboard):
	// live without a script.
	Refresh int
	Data    any
	// Clustered: the node is part of a cluster with PostgreSQL (the
	// Nodes page). Outages are the cluster's engines it cannot reach,
	// said on every page of an admin or auditor.
	Clustered bool
	Outages   []outage
}

// outage is an engine of the cluster the node cannot reach, as the
// banner tells it.
type outage struct {
	Engine string
	Since  time.Time
	Effect string
}

// engineOutages are what the banner says of each engine away.
var engineOutages = map[string]outage{
	"postgres": {Engine: "PostgreSQL", Effect: "the quarantine, traces, lists, audit log and nodes of the cluster cannot be read or changed " +
		"from this node until it answers; what this node quarantines meanwhile is kept on its disk, and mail keeps flowing."},
	"redis": {Engine: "Redis", Effect: "rate limits, greylisting and the pre-greet test are passed over (they fail open) until it answers; mail keeps flowing."},
}

// outages returns the engines the node cannot reach, as it last found
// them.
func (c *Console) outages() []outage {
	if c.opts.Engines == nil {
		return nil
	}
	var out []outage
	for _, ch := range c.opts.Engines() {
		if o, ok := engineOutages[ch.Name]; ok && ch.Status != admin.OK {
			o.Since = ch.Since
			out = append(out, o)
		}
	}
	return out
}

// CanChange reports whether the user may change things (not an auditor).
func (v view) CanChange() bool { return v.User != nil && v.User.Role == "admin" || v.Rcpt != "" }

// Allows reports whether the viewer may do op to message id: an admin
// anything, an end user what their link allows (Link.Allows).
func (v view) Allows(op, id string) bool {
	if v.Link != nil {
		return v.Link.Allows(op, id)
	}
	return v.User != nil && v.User.Role == "admin"
}

// WholeLink reports whether the page is of an end user's link to their
// whole quarantine, whose other pages it may link to.
func (v view) WholeLink() bool { return v.Link != nil && v.Link.Scope == scopeAll }

type pages struct{ byName map[string]*template.Template }

// qtable is what the table of quarantined messages (qtable.tmpl) gets.
type qtable struct {
	V    view
	Rows []quarantineRow
	Base string
}

var funcs = template.FuncMap{
	"when": func(t time.Time) string {
		if t.IsZero() {
			return ""
		}
		return t.Local().Format("2006-01-02 15:04:05")
	},
	"ago": func(t time.Time) string { return time.Since(t).Round(time.Second).String() },
	"ms":  func(f float64) string { return fmt.Sprintf("%.1f ms", f) },
	"score": func(f float64) string {
		if f == 0 {
			return ""
		}
		return fmt.Sprintf("%g", f)
	},
	"sender": func(from *string) string {
		switch {
		case from == nil:
			return ""
		case *from == "":
			return "<>"
		}
		return *from
	},
	"bytes": func(n int64) string {
		for _, u := range []struct {
			unit string
			size int64
		}{{"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}} {
			if n >= u.size {
				return fmt.Sprintf("%.1f %s", float64(n)/float64(u.size), u.unit)
			}
		}
		return fmt.Sprintf("%d B", n)
	},
	"join": strings.Join,
	"short": func(hash string) string {
		if len(hash) > 12 {
			return hash[:12]
		}
		return hash
	},
	"since": func(now, t time.Time) string { return now.Sub(t).Round(time.Second).String() },
	// healthClass is the badge of a node's health: ok, degraded, down
	// or stopped (as down).
	"healthClass": func(h string) string {
		word, _, _ := strings.Cut(h, ":")
		if word == "ok" || word == "degraded" {
			return word
		}
		return "down"
	},
	"add": func(a, b int) int { return a + b },
	"mul": func(a, b int) int { return a * b },
	"barsOf": func(title string, bars []Bar) barChart {
		return barChart{title, bars}
	},
	"args": func(v view, rows []quarantineRow, base string) qtable {
		return qtable{V: v, Rows: rows, Base: base}
	},
}

// barChart is what the dashboard's bars template gets.
type barChart struct {
	Title string
	Bars  []Bar
}

// parsePages parses each page with the layout around it.
func parsePages() (*pages, error) {
	files, err := fs.Glob(assets, "templates/*.html")
	if err != nil {
		return nil, err
	}
	p := &pages{byName: map[string]*template.Template{}}
	for _, f := range files {
		name := strings.TrimSuffix(strings.TrimPrefix(f, "templates/"), ".html")
		if name == "layout" {
			continue
		}
		t, err := template.New(name).Funcs(funcs).ParseFS(assets, "templates/layout.html", "templates/*.tmpl", f)
		if err != nil {
			return nil, err
		}
		p.byName[name] = t
	}
	return p, nil
}

// render writes page with v, status code.
func (c *Console) render(w http.ResponseWriter, code int, page string, v view) {
	t := c.pages.byName[page]
	if v.User != nil {
		v.Clustered, v.Outages = c.opts.Nodes != nil, c.outages()
	}
	var b bytes.Buffer
	if err := t.ExecuteTemplate(&b, "layout", v); err != nil {
		c.log.Error("web page", "page", page, "err", err)
		http.Error(w, "internal error", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	w.Write(b.Bytes())
}

// fail answers with a page saying msg, in the frame of v, the view the
// request has so far (its user's menu, or an end user's): its session
// was looked up once, by staff, and an error is no reason to ask the
// store again. A request refused before that (guard) passes view{}.
func (c *Console) fail(w http.ResponseWriter, v view, code int, msg string) {
	v.Title, v.Data, v.Refresh = http.StatusText(code), msg, 0
	c.render(w, code, "error", v)
}

// done answers a change with a page saying what was done, and where to
// go on.
type doneData struct {
	Lines []string
	Back  string
}

func (c *Console) done(w http.ResponseWriter, v view, back string, lines ...string) {
	v.Title, v.Data = "Done", doneData{Lines: lines, Back: back}
	c.render(w, http.StatusOK, "done", v)
}

func (c *Console) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "static")
	m.Handle("GET /static/", http.StripPrefix("/static/", http.FileServerFS(static)))
	m.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/tracking", http.StatusSeeOther)
	})
	m.HandleFunc("GET /login", c.loginPage)
	m.HandleFunc("POST /login", c.login)
	m.HandleFunc("POST /logout", c.logout)

	m.HandleFunc("GET /tracking", c.admin(c.tracking))
	m.HandleFunc("GET /message/{id}", c.admin(c.message))
	m.HandleFunc("GET /queue", c.admin(c.queueList))
	m.HandleFunc("POST /queue/bulk", c.change(c.queueBulk))
	m.HandleFunc("POST /queue/{id}/{op}", c.change(c.queueOp))
	m.HandleFunc("GET /dashboard", c.admin(c.dashboard))
	m.HandleFunc("GET /audit", c.admin(c.auditLog))
	m.HandleFunc("GET /nodes", c.admin(c.nodes))

	m.HandleFunc("GET /quarantine", c.admin(c.quarantineList))
	m.HandleFunc("GET /quarantine/{id}", c.admin(c.quarantineShow))
	m.HandleFunc("GET /quarantine/{id}/eml", c.admin(c.quarantineEML))
	m.HandleFunc("POST /quarantine/{id}/{op}", c.change(c.quarantineOp))
	m.HandleFunc("POST /quarantine/bulk", c.change(c.quarantineBulk))
	m.HandleFunc("POST /digest", c.change(c.digestNow))
	m.HandleFunc("GET /lists", c.admin(c.lists))
	m.HandleFunc("POST /lists", c.change(c.listChange))

	m.HandleFunc("POST /links/revoke", c.change(c.linksRevoke))

	// An end user's pages: what each is, for the link's scope (Link.Allows).
	m.HandleFunc("GET /u/{token}", c.endUser("list", c.endUserList))
	m.HandleFunc("GET /u/{token}/lists", c.endUser("lists", c.lists))
	m.HandleFunc("POST /u/{token}/lists", c.endUser("lists", c.listChange))
	m.HandleFunc("POST /u/{token}/bulk", c.endUser("bulk", c.quarantineBulk))
	m.HandleFunc("POST /u/{token}/revoke", c.endUser("revoke", c.endUserRevoke))
	m.HandleFunc("GET /u/{token}/{id}", c.endUser("view", c.quarantineShow))
	m.HandleFunc("GET /u/{token}/{id}/{op}", c.endUser("", c.endUserConfirm))
	m.HandleFunc("POST /u/{token}/{id}/{op}", c.endUser("", c.quarantineOp))
	c.mux = m
}

// staff wraps a page for logged-in users; change says whether it changes
// something (admins only). Without a session a GET goes to the login
// form and back, anything else is refused.
//
// A session the store cannot vouch for (errUnverified) gets 503 and a
// page saying why: not the login form, which would take the password and
// then refuse the new session the same way, a loop that reads as a wrong
// password; and not the page, since the cookie may have been logged out
// on another node. One exception, so that the console serves during a
// cluster's outage, when the admin needs it most: while the node knows
// the cluster's PostgreSQL is away (state.ErrUnavailable, which a client
// cannot cause, unlike a cancelled request), a look is allowed with this
// node's own logouts checked, and every page says the store is
// unreachable; a change still gets 503.
func (c *Console) staff(change bool, h func(http.ResponseWriter, *http.Request, view)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		s, err := c.session(r)
		if err != nil && (change || s == nil || !errors.Is(err, state.ErrUnavailable)) {
			c.render(w, http.StatusServiceUnavailable, "error", view{Title: "Try again later",
				Data: "Your session cannot be checked now: the gateway's state store does not answer. Try again in a few minutes; the log says more."})
			return
		}
		if s == nil {
			if r.Method == http.MethodGet {
				http.Redirect(w, r, "/login?next="+url.QueryEscape(r.URL.RequestURI()), http.StatusSeeOther)
				return
			}
			c.fail(w, view{}, http.StatusForbidden, "Log in first.")
			return
		}
		v := view{User: &s.User, CSRF: c.keys.csrfToken(s.token)}
		if change {
			switch {
			case s.User.Role != "admin":
				c.fail(w, v, http.StatusForbidden, "Your role may look, not change.")
				return
			case !c.keys.checkCSRF(s.token, r.PostFormValue("csrf")):
				c.fail(w, v, http.StatusForbidden, "The form had no valid CSRF token: reload the page and try again.")
				return
			}
			var ok bool
			if r, ok = c.changeRequest(w, r); !ok {
				return
			}
		}
		h(w, r, v)
	}
}

func (c *Console) admin(h func(http.ResponseWriter, *http.Request, view)) http.HandlerFunc {
	return c.staff(false, h)
}

func (c *Console) change(h func(http.ResponseWriter, *http.Request, view)) http.HandlerFunc {
	return c.staff(true, h)
}

// secure reports whether the browser reaches the console over TLS: its
// own, or a proxy's in front of it (base_url https://).
func (c *Console) secure(r *http.Request) bool {
	return r.TLS != nil || strings.HasPrefix(c.opts.Config().Web.BaseURL, "https://")
}

// sessionCookie is the cookie's name: with the __Host- prefix over TLS,
// so that no other site (a subdomain) can set it (RFC 6265bis §4.1.3.2).
func (c *Console) sessionCookie(r *http.Request) string {
	if c.secure(r) {
		return "__Host-mailgate_session"
	}
	return "mailgate_session"
}

// changeRequest readies r for a change: one whose client went away
// already (its context cancelled) is not started, and one started runs to
// its end on a context the client cannot cancel, so that a release or a
// delete is never left half done, its audit entry unwritten, because a
// browser closed. ok is false when the change must not start.
func (c *Console) changeRequest(w http.ResponseWriter, r *http.Request) (*http.Request, bool) {
	if err := r.Context().Err(); err != nil {
		c.log.Info("web change not started: the client went away", "path", r.URL.Path, "err", err)
		http.Error(w, "the request was cancelled; nothing was done", http.StatusServiceUnavailable)
		return r, false
	}
	return r.WithContext(context.WithoutCancel(r.Context())), true
}

// cookieSession returns the session of r's cookie if this console signed
// it and it has not expired, whether logged out or not.
func (c *Console) cookieSession(r *http.Request) (*session, bool) {
	ck, err := r.Cookie(c.sessionCookie(r))
	if err != nil {
		return nil, false
	}
	return c.keys.checkSession(ck.Value, c.opts.Config().Web.Users, c.opts.Now())
}

// session returns the session of r's cookie: nil when there is none, or
// it is not good (forged, expired, logged out); the session with
// errUnverified (wrapping the store's error) when the store cannot say
// whether it was logged out.
func (c *Console) session(r *http.Request) (*session, error) {
	s, ok := c.cookieSession(r)
	if !ok {
		return nil, nil
	}
	revoked, err := c.sessionRevoked(r.Context(), s.id)
	switch {
	case revoked:
		return nil, nil
	case err != nil:
		return s, err // unverified: the caller decides what it may do
	}
	return s, nil
}

type loginData struct {
	Next, Name, Error string
}

// safeNext is where to go after the login: a path of this console only.
// Browsers drop tabs and newlines from a URL and read a backslash as a
// slash, so "/%09/evil.example" would go to another host: the path is
// decoded, and one with a control byte or a backslash, or starting with
// anything but a single '/', is refused.
func safeNext(next string) string {
	const home = "/tracking"
	if strings.ContainsFunc(next, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return home
	}
	u, err := url.Parse(next)
	if err != nil || u.Scheme != "" || u.Host != "" || u.User != nil || u.Opaque != "" ||
		!strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") ||
		strings.ContainsFunc(u.Path, func(r rune) bool { return r < 0x20 || r == 0x7f || r == '\\' }) {
		return home
	}
	return u.RequestURI()
}

func (c *Console) loginPage(w http.ResponseWriter, r *http.Request) {
	c.render(w, http.StatusOK, "login", view{Title: "Log in", Data: loginData{Next: safeNext(r.URL.Query().Get("next"))}})
}

// dummyHash is verified against when the name is unknown, so that the
// answer takes as long as for a known name: made by policy.HashPassword,
// as `mailgate user add` makes the accounts' (argon2id, its parameters),
// once, at the first login that needs it.
var dummyHash = sync.OnceValue(func() policy.PasswordHash {
	var h policy.PasswordHash
	s, err := policy.HashPassword("not a password")
	if err == nil {
		err = h.UnmarshalText([]byte(s))
	}
	if err != nil {
		panic("console: the dummy password hash: " + err.Error())
	}
	return h
})

func (c *Console) login(w http.ResponseWriter, r *http.Request) {
	name, password := r.PostFormValue("name"), r.PostFormValue("password")
	d := loginData{Next: safeNext(r.PostFormValue("next")), Name: name}
	if len(name) > policy.MaxWebUserName {
		// No account has it: not counted, logged or shown back.
		d.Name, d.Error = "", "Wrong name or password."
		c.render(w, http.StatusUnauthorized, "login", view{Title: "Log in", Data: d})
		return
	}
	client := c.clientAddr(r)
	now := c.opts.Now()
	ok, wait := c.logins.allow(client, name, now)
	if !ok {
		c.log.Warn("web login refused: too many attempts", "client", client, "user", name)
		d.Error = "Too many attempts. Wait a minute and try again."
		c.render(w, http.StatusTooManyRequests, "login", view{Title: "Log in", Data: d})
		return
	}
	if wait > 0 {
		// The name is under attack from many addresses: slower, never
		// refused, so that its owner still gets in.
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	cfg := c.opts.Config()
	var user *policy.WebUser
	for i := range cfg.Web.Users {
		if cfg.Web.Users[i].Name == name {
			user = &cfg.Web.Users[i]
		}
	}
	if user == nil {
		dummyHash().Verify(password)
	}
	if user == nil || !user.PasswordHash.Verify(password) {
		c.logins.failed(client, name, now)
		c.log.Warn("web login failed", "client", client, "user", name)
		d.Error = "Wrong name or password."
		c.render(w, http.StatusUnauthorized, "login", view{Title: "Log in", Data: d})
		return
	}
	exp := now.Add(time.Duration(cfg.Web.SessionTTL))
	http.SetCookie(w, &http.Cookie{Name: c.sessionCookie(r), Value: c.keys.newSession(*user, exp), Path: "/",
		Expires: exp, Secure: c.secure(r), HttpOnly: true, SameSite: http.SameSiteStrictMode})
	c.logins.succeeded(client, name)
	c.log.Info("web login", "client", client, "user", name)
	http.Redirect(w, r, d.Next, http.StatusSeeOther)
}

func (c *Console) logout(w http.ResponseWriter, r *http.Request) {
	// A logout needs no word from the store: ending a session ended
	// already is harmless, and one the store cannot vouch for must end
	// all the same.
	if s, ok := c.cookieSession(r); ok && c.keys.checkCSRF(s.token, r.PostFormValue("csrf")) {
		c.revokeSession(r.Context(), s)
		c.log.Info("web logout", "client", c.clientAddr(r), "user", s.User.Name)
	}
	http.SetCookie(w, &http.Cookie{Name: c.sessionCookie(r), Value: "", Path: "/", MaxAge: -1,
		Secure: c.secure(r), HttpOnly: true, SameSite: http.SameSiteStrictMode})
	http.Redirect(w, r, "/login", http.StatusSeeOther)
}
