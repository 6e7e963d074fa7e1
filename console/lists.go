package console

import (
	"errors"
	"net/http"
	"strings"

	"github.com/mailgate/mailgate/gateway/state"
)

type listsData struct {
	Owner   string
	Entries []state.ListEntry
	Problem string
}

// lists shows the users' allow- and block-lists, or one user's.
func (c *Console) lists(w http.ResponseWriter, r *http.Request, v view) {
	d := listsData{Owner: strings.TrimSpace(r.URL.Query().Get("owner"))}
	if v.Rcpt != "" {
		d.Owner = v.Rcpt
	}
	owner := d.Owner
	if owner != "" {
		e, err := state.CanonicalEntry(state.ListEntry{Owner: owner, Kind: state.Allow, Sender: "example.test"})
		if err != nil {
			d.Problem = "Not an address: " + owner
		}
		owner = e.Owner
	}
	if d.Problem == "" {
		var err error
		if d.Entries, err = c.opts.Lists.Entries(r.Context(), owner); err != nil {
			c.log.Error("web lists", "err", err)
			d.Problem = "The lists could not be read; the log says why."
		}
	}
	v.Title, v.Nav = "Allow- and block-lists", "lists"
	if v.Rcpt != "" {
		v.Title = "Your allow- and block-lists"
	}
	v.Data = d
	c.render(w, http.StatusOK, "lists", v)
}

// listChange adds or removes an entry: an admin's for any owner, an end
// user's for themselves.
func (c *Console) listChange(w http.ResponseWriter, r *http.Request, v view) {
	owner, kind, sender := strings.TrimSpace(r.PostFormValue("owner")), state.ListKind(r.PostFormValue("kind")), strings.TrimSpace(r.PostFormValue("sender"))
	back := "/lists?owner=" + owner
	if v.Rcpt != "" {
		owner, back = v.Rcpt, "/u/"+v.Token+"/lists"
	}
	var err error
	var line string
	switch r.PostFormValue("op") {
	case "add":
		err = c.list(r.Context(), v, owner, kind, sender)
		line = "Added " + sender + " to the " + string(kind) + "-list of " + owner + "."
	case "remove":
		if _, cerr := state.CanonicalEntry(state.ListEntry{Owner: owner, Kind: kind, Sender: sender}); cerr != nil {
			err = refusef("%v", cerr)
			break
		}
		err = c.opts.Lists.Remove(r.Context(), owner, kind, sender)
		if errors.Is(err, state.ErrNotFound) {
			err = refusef("%s is not on the %s-list of %s", sender, kind, owner)
		}
		if err == nil {
			c.audit(r.Context(), v, "list.remove", owner, string(kind)+" "+sender)
		}
		line = "Removed " + sender + " from the " + string(kind) + "-list of " + owner + "."
	default:
		err = refusef("no such operation")
	}
	if err != nil {
		c.opFailed(w, r, v, back, owner, err)
		return
	}
	c.done(w, v, back, line)
}
