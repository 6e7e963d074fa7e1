package console

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

// endUser wraps a page of an end user's link: /u/{token}/…, for op, the
// operation the page is (or, for "", the {op} of its path). The link is
// the credential: one not made by this console gets 403, an expired one
// 410, one whose recipient's links were revoked since 403, one that does
// not allow op on the page's message 403. A change (a POST) needs the
// link's CSRF token too (a page of another site that learned the link
// cannot post with it).
func (c *Console) endUser(op string, h func(http.ResponseWriter, *http.Request, view)) http.HandlerFunc {
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
		v := view{Rcpt: l.Rcpt, Token: token, Link: &l, CSRF: c.keys.csrfToken("link " + token)}
		page := op
		if page == "" {
			page = r.PathValue("op")
		}
		if !l.Allows(page, r.PathValue("id")) {
			v.Title, v.Data = "Not for this link", "This link is for one message and one action. The link to all mail held for you, in the digest, opens the rest."
			c.render(w, http.StatusForbidden, "error", v)
			return
		}
		if r.Method == http.MethodPost {
			if !c.keys.checkCSRF("link "+token, r.PostFormValue("csrf")) {
				v.Title, v.Data = "Refused", "The form had no valid CSRF token: reload the page and try again."
				c.render(w, http.StatusForbidden, "error", v)
				return
			}
		}
		// The store last: what the link and the form say needs none.
		ctx, cancel := storeCtx(r.Context())
		gen, err := c.opts.Revocations.LinkGeneration(ctx, l.Rcpt)
		cancel()
		switch {
		case err != nil:
			// Whether the link was revoked cannot be known: refused
			// until the store answers.
			c.log.Error("web link: the state store does not answer", "rcpt", l.Rcpt, "err", err)
			c.render(w, http.StatusServiceUnavailable, "error", view{Title: "Try again later",
				Data: "This page cannot be shown now. Try again in a few minutes."})
			return
		case l.Gen < gen:
			c.render(w, http.StatusForbidden, "error", view{Title: "Link revoked",
				Data: "This link was revoked. The next quarantine digest brings a new one."})
			return
		}
		if r.Method == http.MethodPost {
			var ok bool
			if r, ok = c.changeRequest(w, r); !ok {
				return
			}
		}
		h(w, r, v)
	}
}

// endUserList is a recipient's quarantine: their messages not released
// to them yet.
func (c *Console) endUserList(w http.ResponseWriter, r *http.Request, v view) {
	d := quarantineData{}
	var err error
	d.Rows, d.More, err = c.rows(r.Context(), state.Filter{Rcpt: v.Rcpt}, "all", func(rec *state.QuarantineRecord) bool {
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
		v.Title, v.Data = "Not found", "No such page."
		c.render(w, http.StatusNotFound, "error", v)
		return
	}
	rec := c.record(w, r, v, id)
	if rec == nil {
		return
	}
	if op == "release" && !c.endUserMayRelease(rec) {
		v.Title, v.Data = "Ask your administrator", "This message was held as dangerous: ask your administrator to release it."
		c.render(w, http.StatusForbidden, "error", v)
		return
	}
	v.Title = label + "?"
	v.Data = confirmData{Op: op, Label: label, Subject: c.subject(r.Context(), id), From: rec.From, Action: "/u/" + v.Token + "/" + id + "/" + op}
	c.render(w, http.StatusOK, "confirm", v)
}

// endUserRevoke ends every link of the recipient, this one too: for a
// digest forwarded by mistake. The next digest brings new links.
func (c *Console) endUserRevoke(w http.ResponseWriter, r *http.Request, v view) {
	if err := c.revokeLinks(r.Context(), v, v.Rcpt); err != nil {
		c.opFailed(w, r, v, "/u/"+v.Token, v.Rcpt, err)
		return
	}
	v.Link, v.Token = nil, "" // no page of it opens any more
	c.done(w, v, "", "Every link sent to "+v.Rcpt+" so far has stopped working, this one too. The next quarantine digest brings new ones.")
}

// revokeLinks ends every link of rcpt made so far, and records who did.
func (c *Console) revokeLinks(ctx context.Context, v view, rcpt string) error {
	a, err := address.Parse(rcpt)
	if err != nil {
		return refusef("not an address: %s", rcpt)
	}
	a = address.Key(a) // as the store keeps it
	gen, err := c.opts.Revocations.RevokeLinks(ctx, a)
	if err != nil {
		return err
	}
	c.audit(ctx, v, "links.revoke", a, fmt.Sprintf("links before generation %d", gen))
	return nil
}

// linksRevoke is an admin's revocation of a recipient's links: every
// link mailed to them so far stops working.
func (c *Console) linksRevoke(w http.ResponseWriter, r *http.Request, v view) {
	owner := strings.TrimSpace(r.PostFormValue("owner"))
	back := "/lists?owner=" + url.QueryEscape(owner)
	if err := c.revokeLinks(r.Context(), v, owner); err != nil {
		c.opFailed(w, r, v, back, owner, err)
		return
	}
	c.done(w, v, back, "Every link sent to "+owner+" so far has stopped working; the next digest brings new ones.")
}
