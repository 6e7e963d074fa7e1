package console

import (
	"errors"
	"net/http"
	"slices"

	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/stages/address"
)

// endUser wraps a page of an end user's link: /u/{token}/…. The link is
// the credential: one not made by this console gets 403, an expired one
// 410; a change needs the link's CSRF token too (a page of another site
// that learned the link cannot post with it).
func (c *Console) endUser(change bool, h func(http.ResponseWriter, *http.Request, view)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		token := r.PathValue("token")
		l, err := c.keys.checkLink(token, c.opts.Now())
		switch {
		case errors.Is(err, errExpiredLink):
			c.render(w, http.StatusGone, "error", view{Title: "Link expired",
				Data: "This link has expired. The next quarantine digest brings a new one."})
			return
		case err != nil:
			c.render(w, http.StatusForbidden, "error", view{Title: "Link not valid", Data: "This link is not valid."})
			return
		}
		v := view{Rcpt: l.Rcpt, Token: token, CSRF: c.keys.csrfToken("link " + token)}
		if change && !c.keys.checkCSRF("link "+token, r.PostFormValue("csrf")) {
			c.render(w, http.StatusForbidden, "error", view{Title: "Refused", Rcpt: l.Rcpt, Token: token,
				Data: "The form had no valid CSRF token: reload the page and try again."})
			return
		}
		h(w, r, v)
	}
}

// endUserList is a recipient's quarantine: their messages not released
// to them yet.
func (c *Console) endUserList(w http.ResponseWriter, r *http.Request, v view) {
	d := quarantineData{}
	var err error
	d.Rows, d.More, err = c.rows(quarantine.Filter{Rcpt: v.Rcpt}, "all", func(rec *quarantine.Record) bool {
		return slices.ContainsFunc(rec.Pending(), func(a string) bool { return address.Equal(a, v.Rcpt) })
	})
	if err != nil {
		c.log.Error("web quarantine", "rcpt", v.Rcpt, "err", err)
		d.Problem = "The quarantine could not be read. Try again later."
	}
	v.Title, v.Data = "Your quarantine", d
	c.render(w, http.StatusOK, "enduser", v)
}

// confirmData is the page a digest's action link opens: the action is a
// button on it, never the link itself, since mail scanners open links.
type confirmData struct {
	Op, Label, Subject, From, Action string
}

var confirmOps = map[string]string{"release": "Release this message to me", "allow": "Always allow this sender",
	"block": "Block this sender", "delete": "Delete this message"}

func (c *Console) endUserConfirm(w http.ResponseWriter, r *http.Request, v view) {
	id, op := r.PathValue("id"), r.PathValue("op")
	label, ok := confirmOps[op]
	if !ok {
		c.render(w, http.StatusNotFound, "error", view{Title: "Not found", Rcpt: v.Rcpt, Token: v.Token, Data: "No such page."})
		return
	}
	rec := c.record(w, r, v, id)
	if rec == nil {
		return
	}
	if op == "release" && !c.endUserMayRelease(rec) {
		c.render(w, http.StatusForbidden, "error", view{Title: "Ask your administrator", Rcpt: v.Rcpt, Token: v.Token,
			Data: "This message was held as dangerous: ask your administrator to release it."})
		return
	}
	v.Title = label + "?"
	v.Data = confirmData{Op: op, Label: label, Subject: c.subject(id), From: rec.From, Action: "/u/" + v.Token + "/" + id + "/" + op}
	c.render(w, http.StatusOK, "confirm", v)
}
