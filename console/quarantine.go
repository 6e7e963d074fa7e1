package console

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

// maxQuarantineRows bounds the quarantine list: the newest.
const maxQuarantineRows = 500

// quarantineRow is a quarantined message in a list.
type quarantineRow struct {
	*state.QuarantineRecord
	Subject string
}

type quarantineData struct {
	Digests                                bool // digests can be sent: [web] base_url is set
	From, Rcpt, Stage, Newer, Older, State string
	Rows                                   []quarantineRow
	More                                   bool
	Problem                                string
}

// quarantineFilter reads the list's filters from the query.
func quarantineFilter(r *http.Request) (quarantineData, state.Filter, error) {
	q := r.URL.Query()
	d := quarantineData{From: q.Get("from"), Rcpt: q.Get("rcpt"), Stage: q.Get("stage"), Newer: q.Get("newer"),
		Older: q.Get("older"), State: q.Get("state")}
	f := state.Filter{From: d.From, Rcpt: d.Rcpt, Stage: d.Stage}
	for _, p := range []struct {
		in  string
		out *time.Duration
	}{{d.Newer, &f.NewerThan}, {d.Older, &f.OlderThan}} {
		if p.in == "" {
			continue
		}
		v, err := time.ParseDuration(p.in)
		if err != nil || v < 0 {
			return d, f, fmt.Errorf("an age is written 24h, 30m or 1h30m")
		}
		*p.out = v
	}
	return d, f, nil
}

// rows lists the records f selects in state ("held": not released, the
// default; "released"; "all"), newest first, each with its subject.
func (c *Console) rows(ctx context.Context, f state.Filter, st string, keep func(*state.QuarantineRecord) bool) ([]quarantineRow, bool, error) {
	recs, err := c.opts.Admin.Quarantined(ctx, f)
	if err != nil {
		return nil, false, err
	}
	slices.Reverse(recs)
	var out []quarantineRow
	for _, rec := range recs {
		switch {
		case st == "released" && rec.Released == "", (st == "" || st == "held") && rec.Released != "",
			keep != nil && !keep(rec):
			continue
		case len(out) == maxQuarantineRows:
			return out, true, nil
		}
		out = append(out, quarantineRow{QuarantineRecord: rec, Subject: c.subject(ctx, rec.ID)})
	}
	return out, false, nil
}

// subject reads the Subject of a quarantined message.
func (c *Console) subject(ctx context.Context, id string) string {
	m, err := c.opts.Admin.QuarantineMessage(ctx, id)
	if err != nil {
		return ""
	}
	defer m.Close()
	return readSubject(m)
}

func (c *Console) quarantineList(w http.ResponseWriter, r *http.Request, v view) {
	d, f, err := quarantineFilter(r)
	if err != nil {
		d.Problem = err.Error()
	} else if d.Rows, d.More, err = c.rows(r.Context(), f, d.State, nil); err != nil {
		d.Problem = c.unreadable("The quarantine", err)
	}
	d.Digests = c.opts.Config().Web.BaseURL != ""
	v.Title, v.Nav, v.Data = "Quarantine", "quarantine", d
	c.render(w, http.StatusOK, "quarantine", v)
}

// shownData is a quarantined message's page.
type shownData struct {
	Rec     *state.QuarantineRecord
	Preview Preview
	Pending []string
	// Releasable is false for a hold the viewer may not release: an end
	// user's of a stage's own action.
	Releasable bool
	// Base is where the page's forms post: /quarantine/ID or, for an
	// end user, /u/TOKEN/ID.
	Base string
	// Rcpts are the recipients the viewer may act for, and the ones the
	// page names: all of them for an admin, the one of the link for an
	// end user, who is not told whom else (a Bcc among them) the
	// message was for.
	Rcpts []string
	// Yours is, on an end user's page, the release to them (nil: none
	// yet); the releases to others are not theirs to see.
	Yours *state.QuarantineRelease
}

// record returns quarantined message id if the viewer may see it: an end
// user only their own.
func (c *Console) record(w http.ResponseWriter, r *http.Request, v view, id string) *state.QuarantineRecord {
	rec, err := c.opts.Admin.QuarantineRecord(r.Context(), id)
	if err == nil && v.Rcpt != "" && !slices.ContainsFunc(rec.Rcpts, func(a string) bool { return address.Equal(a, v.Rcpt) }) {
		err = state.ErrNotQuarantined // not theirs: as if it were not there
	}
	switch {
	case errors.Is(err, state.ErrNotQuarantined):
		c.fail(w, v, http.StatusNotFound, "No such message in the quarantine: it may have been deleted or expired.")
		return nil
	case err != nil:
		c.fail(w, v, failCode(err), c.unreadable("The quarantine", err))
		return nil
	}
	return rec
}

func (c *Console) quarantineShow(w http.ResponseWriter, r *http.Request, v view) {
	id := r.PathValue("id")
	rec := c.record(w, r, v, id)
	if rec == nil {
		return
	}
	d := shownData{Rec: rec, Base: "/quarantine/" + id, Rcpts: rec.Rcpts, Releasable: true}
	if v.Rcpt != "" {
		d.Base, d.Rcpts, d.Releasable = "/u/"+v.Token+"/"+id, []string{v.Rcpt}, c.endUserMayRelease(rec)
		d.Yours = releaseTo(rec, v.Rcpt)
	}
	for _, a := range rec.Pending() {
		if slices.ContainsFunc(d.Rcpts, func(b string) bool { return address.Equal(a, b) }) {
			d.Pending = append(d.Pending, a)
		}
	}
	if m, err := c.opts.Admin.QuarantineMessage(r.Context(), id); err == nil {
		d.Preview = readPreview(m)
		m.Close()
	} else {
		d.Preview.Problem = "the message could not be read"
	}
	title := d.Preview.Subject
	if title == "" {
		title = "(no subject)"
	}
	v.Title, v.Nav, v.Data = title, "quarantine", d
	c.render(w, http.StatusOK, "preview", v)
}

// releaseTo returns the release of rec to rcpt: the partial release that
// named it, or the release of the whole message; nil when rcpt waits.
func releaseTo(rec *state.QuarantineRecord, rcpt string) *state.QuarantineRelease {
	for i, rel := range rec.Releases {
		if slices.ContainsFunc(rel.Rcpts, func(a string) bool { return address.Equal(a, rcpt) }) {
			return &rec.Releases[i]
		}
	}
	if rec.Released != "" {
		return &state.QuarantineRelease{QueueID: rec.Released, At: rec.ReleasedAt}
	}
	return nil
}

// quarantineEML sends the message as a file to save, never to show.
func (c *Console) quarantineEML(w http.ResponseWriter, r *http.Request, v view) {
	id := r.PathValue("id")
	if c.record(w, r, v, id) == nil {
		return
	}
	m, err := c.opts.Admin.QuarantineMessage(r.Context(), id)
	if err != nil {
		c.fail(w, v, http.StatusNotFound, "No such message in the quarantine.")
		return
	}
	defer m.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Disposition", `attachment; filename="`+id+`.eml"`)
	io.Copy(w, m)
}

// act runs op on quarantined message id for rcpts, the recipients chosen
// (the end user's own, those an admin checked), or nil for all of them,
// and says what it did.
func (c *Console) act(ctx context.Context, v view, op string, rec *state.QuarantineRecord, rcpts []string) (string, error) {
	chosen := rcpts != nil
	if !chosen {
		rcpts = rec.Rcpts
	}
	switch op {
	case "release":
		if v.Rcpt != "" && !c.endUserMayRelease(rec) {
			return "", refusef("%s was held by %s; ask your administrator to release it", rec.ID, cmp.Or(rec.Stage, "the gateway"))
		}
		if chosen {
			// Some recipients: only those not released yet.
			var pending []string
			for _, a := range rcpts {
				if i := slices.IndexFunc(rec.Pending(), func(b string) bool { return address.Equal(a, b) }); i >= 0 {
					pending = append(pending, rec.Pending()[i])
				}
			}
			if len(pending) == 0 {
				return "", refusef("%s was released already", rec.ID)
			}
			rcpts = pending
		} else {
			rcpts = nil // the rest, whoever is left
		}
		copyID, err := c.opts.Admin.QuarantineRelease(ctx, rec.ID, rcpts)
		if err != nil {
			return "", err
		}
		c.audit(ctx, v, "quarantine.release", rec.ID, "queued as "+copyID+to(rcpts))
		return fmt.Sprintf("Released %s%s: queued as %s.", rec.ID, to(rcpts), copyID), nil
	case "delete":
		if v.Rcpt != "" && len(rec.Rcpts) > 1 {
			return "", refusef("%s has other recipients too; it stays until they or an admin decide", rec.ID)
		}
		if err := c.opts.Admin.QuarantineDelete(ctx, rec.ID); err != nil {
			return "", err
		}
		c.audit(ctx, v, "quarantine.delete", rec.ID, "")
		return "Deleted " + rec.ID + ".", nil
	case "allow", "block":
		if rec.From == "" {
			return "", refusef("the null sender (a bounce) cannot be listed")
		}
		for _, owner := range rcpts {
			if err := c.list(ctx, v, owner, state.ListKind(op), rec.From); err != nil {
				return "", err
			}
		}
		return fmt.Sprintf("Mail from %s is %s%s from now on.", rec.From, map[string]string{"allow": "allowed", "block": "blocked"}[op], to(rcpts)), nil
	}
	return "", refusef("no such operation %q", op)
}

// endUserMayRelease reports whether an end user may release rec: a hold
// a score threshold made, or one of a stage [web] enduser_release lists.
// What a stage held by its own action (a virus, a file type) needs an
// admin: a sender is easy to forge.
func (c *Console) endUserMayRelease(rec *state.QuarantineRecord) bool {
	return rec.ByScore || slices.Contains(c.opts.Config().Web.EndUserRelease, rec.Stage)
}

func to(rcpts []string) string {
	if len(rcpts) == 0 {
		return ""
	}
	return " for " + strings.Join(rcpts, ", ")
}

// list adds sender to owner's list of kind and takes it off the other
// list: the last choice holds.
func (c *Console) list(ctx context.Context, v view, owner string, kind state.ListKind, sender string) error {
	by := "console:" + v.Rcpt
	if v.User != nil {
		by = "console:" + v.User.Name
	}
	e := state.ListEntry{Owner: owner, Kind: kind, Sender: sender, By: by}
	if _, err := state.CanonicalEntry(e); err != nil {
		return refusef("%v", err)
	}
	if err := c.opts.Lists.Add(ctx, e); err != nil {
		return err
	}
	other := state.Allow
	if kind == state.Allow {
		other = state.Block
	}
	if err := c.opts.Lists.Remove(ctx, owner, other, sender); err != nil && !errors.Is(err, state.ErrNotFound) {
		return err
	}
	c.audit(ctx, v, "list.add", owner, string(kind)+" "+sender)
	return nil
}

// quarantineOp runs one operation on one message: /quarantine/{id}/{op}
// and the same under an end user's link.
func (c *Console) quarantineOp(w http.ResponseWriter, r *http.Request, v view) {
	id, op := r.PathValue("id"), r.PathValue("op")
	rec := c.record(w, r, v, id)
	if rec == nil {
		return
	}
	var rcpts []string // nil: all
	if v.Rcpt != "" {
		rcpts = []string{v.Rcpt}
	} else if chosen := r.PostForm["rcpt"]; len(chosen) > 0 {
		// The message's own recipients that were checked, each once
		// however spelt (rcpt=bob&rcpt=BOB is bob alone).
		rcpts = []string{}
		for _, a := range chosen {
			i := slices.IndexFunc(rec.Rcpts, func(b string) bool { return address.Equal(a, b) })
			if i >= 0 && !slices.ContainsFunc(rcpts, func(b string) bool { return address.Equal(rec.Rcpts[i], b) }) {
				rcpts = append(rcpts, rec.Rcpts[i])
			}
		}
	}
	back := "/quarantine"
	switch {
	case v.WholeLink():
		back = "/u/" + v.Token
	case v.Link != nil:
		back = "/u/" + v.Token + "/" + id // the one page a one-message link opens
	}
	line, err := c.act(r.Context(), v, op, rec, rcpts)
	if err != nil {
		c.opFailed(w, r, v, back, id, err)
		return
	}
	c.done(w, v, back, line)
}

// quarantineBulk runs an operation on the messages checked in a list.
func (c *Console) quarantineBulk(w http.ResponseWriter, r *http.Request, v view) {
	op, ids := r.PostFormValue("op"), r.PostForm["id"]
	if len(ids) == 0 {
		c.fail(w, v, http.StatusBadRequest, "No message was checked.")
		return
	}
	back := "/quarantine"
	if v.Rcpt != "" {
		back = "/u/" + v.Token
	}
	var lines []string
	for _, id := range ids {
		rec, err := c.opts.Admin.QuarantineRecord(r.Context(), id)
		if err == nil && v.Rcpt != "" && !slices.ContainsFunc(rec.Rcpts, func(a string) bool { return address.Equal(a, v.Rcpt) }) {
			err = state.ErrNotQuarantined
		}
		var line string
		if err == nil {
			var rcpts []string // nil: all
			if v.Rcpt != "" {
				rcpts = []string{v.Rcpt}
			}
			line, err = c.act(r.Context(), v, op, rec, rcpts)
		}
		if err != nil {
			line = id + ": " + userError(err)
			c.log.Info("web quarantine "+op, "id", id, "err", err)
		}
		lines = append(lines, line)
	}
	c.done(w, v, back, lines...)
}

// opFailed answers an operation that did not happen.
func (c *Console) opFailed(w http.ResponseWriter, r *http.Request, v view, back, id string, err error) {
	code := http.StatusInternalServerError
	switch {
	case errors.Is(err, state.ErrAlreadyReleased), errors.Is(err, state.ErrReleasing):
		code = http.StatusConflict
	case errors.Is(err, state.ErrNotQuarantined), errors.Is(err, fs.ErrNotExist):
		code = http.StatusNotFound
	case !isInternal(err):
		code = http.StatusBadRequest
	case errors.Is(err, state.ErrUnavailable):
		code = http.StatusServiceUnavailable
		c.log.Warn("web: an operation refused while the cluster's PostgreSQL is unreachable", "id", id, "err", err)
	}
	if code == http.StatusInternalServerError {
		c.log.Error("web quarantine", "id", id, "err", err)
	}
	v.Title, v.Data = http.StatusText(code), doneData{Lines: []string{id + ": " + userError(err)}, Back: back}
	c.render(w, code, "done", v)
}

// refusal is an operation refused for a reason the user may read.
type refusal struct{ msg string }

func (r *refusal) Error() string { return r.msg }

func refusef(format string, a ...any) error { return &refusal{fmt.Sprintf(format, a...)} }

// isInternal reports whether err is the gateway's failure rather than a
// refusal the user can read.
func isInternal(err error) bool {
	var r *refusal
	return !errors.As(err, &r) && !errors.Is(err, state.ErrAlreadyReleased) && !errors.Is(err, state.ErrReleasing) &&
		!errors.Is(err, state.ErrNotRecipient) && !errors.Is(err, state.ErrNotQuarantined)
}

// userError is what a user is told of err: the refusal, or a generic
// text for a failure of the gateway (the log has it).
func userError(err error) string {
	switch {
	case errors.Is(err, state.ErrAlreadyReleased):
		return "released already (" + err.Error() + ")"
	case errors.Is(err, state.ErrReleasing):
		// Another node of the cluster is releasing it at this moment.
		return "released already, by another node at this moment (" + err.Error() + ")"
	case errors.Is(err, state.ErrNotQuarantined):
		return "no such message in the quarantine"
	case errors.Is(err, state.ErrUnavailable):
		return "not done: the cluster's PostgreSQL is unreachable; try again when it answers"
	case isInternal(err):
		return "the operation failed; the log says why"
	}
	return err.Error()
}
