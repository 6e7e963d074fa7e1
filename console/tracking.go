package console

import (
	"context"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// search is what the tracking center's form asks for.
type search struct {
	ID       string // a queue ID or a Message-ID
	From     string
	Rcpt     string
	Client   string
	Outcome  string
	Since    time.Time
	Until    time.Time
	SinceStr string // as the form shows them
	UntilStr string
}

// timeLayout is how the form's datetime-local fields write a time, in
// the gateway's time zone.
const timeLayout = "2006-01-02T15:04"

// maxMessages bounds the messages a search shows: the newest.
const maxMessages = 200

func (c *Console) parseSearch(q url.Values) (search, string) {
	s := search{ID: strings.TrimSpace(q.Get("id")), From: strings.TrimSpace(q.Get("from")), Rcpt: strings.TrimSpace(q.Get("rcpt")),
		Client: strings.TrimSpace(q.Get("client")), Outcome: q.Get("outcome"), SinceStr: q.Get("since"), UntilStr: q.Get("until")}
	var problem string
	if s.Outcome != "" && !slices.Contains(Outcomes, s.Outcome) {
		problem, s.Outcome = "unknown outcome", ""
	}
	for _, t := range []struct {
		in  *string
		out *time.Time
	}{{&s.SinceStr, &s.Since}, {&s.UntilStr, &s.Until}} {
		if *t.in == "" {
			continue
		}
		v, err := time.ParseInLocation(timeLayout, *t.in, time.Local)
		if err != nil {
			problem, *t.in = "a time must be written 2006-01-02T15:04", ""
			continue
		}
		*t.out = v
	}
	if s.ID == "" && s.SinceStr == "" {
		s.Since = c.opts.Now().Add(-24 * time.Hour)
		s.SinceStr = s.Since.Local().Format(timeLayout)
	}
	return s, problem
}

// outcomeEvents are the events whose action marks an outcome, for a
// search that asks for nothing more selective.
var outcomeEvents = map[string]state.TraceFilter{
	"rejected":    {Action: "reject"},
	"refused":     {Action: "tempfail"},
	"quarantined": {Event: "data", Action: "quarantine"},
	"released":    {Event: "data", Action: "quarantine"},
	"delivered":   {Event: "attempt", Action: "relayed"},
	"deferred":    {Event: "attempt", Action: "deferred"},
	"bounced":     {Action: "bounced"},
}

// find returns the messages s selects, newest first, and whether there
// were more than it shows.
func (c *Console) find(ctx context.Context, s search) ([]*Message, bool, error) {
	if s.ID != "" {
		events, err := c.opts.Traces.Find(ctx, s.ID)
		if err != nil {
			return nil, false, err
		}
		return messages(events), false, nil
	}
	// The store selects by one criterion, the most selective given;
	// the others are checked on the messages found.
	f := state.TraceFilter{Since: s.Since, Until: s.Until, Limit: 5000}
	switch {
	case s.Rcpt != "":
		f.Rcpt = s.Rcpt
	case s.From != "":
		f.From = s.From
	case s.Client != "":
		f.Event = "connect"
	case s.Outcome != "":
		o := outcomeEvents[s.Outcome]
		f.Event, f.Action = o.Event, o.Action
	}
	events, err := c.opts.Traces.Search(ctx, f)
	if err != nil {
		return nil, false, err
	}
	ids := map[string]bool{}
	more := false
	for _, e := range events {
		if s.Client != "" && e.Client != "" && !strings.HasPrefix(e.Client, s.Client) {
			continue
		}
		if !ids[e.QueueID] && len(ids) == maxMessages {
			more = true
			break
		}
		ids[e.QueueID] = true
	}
	var all []trace.Event
	if eo, ok := c.opts.Traces.(eventsOf); ok {
		all, err = eo.EventsOf(ctx, ids, s.Since, s.Until)
	} else {
		for id := range ids {
			ev, ferr := c.opts.Traces.Find(ctx, id)
			if ferr != nil {
				err = ferr
				break
			}
			all = append(all, ev...)
		}
	}
	if err != nil {
		return nil, false, err
	}
	var out []*Message
	for _, m := range messages(all) {
		if ids[m.QueueID] && s.match(m) {
			out = append(out, m)
		}
	}
	return out, more, nil
}

// match checks m against the criteria the store did not select by.
func (s search) match(m *Message) bool {
	has := func(v, sub string) bool { return strings.Contains(strings.ToLower(v), strings.ToLower(sub)) }
	switch {
	case s.From != "" && (m.From == nil || !has(*m.From, s.From)):
		return false
	case s.Rcpt != "" && !slices.ContainsFunc(m.Rcpts, func(r string) bool { return has(r, s.Rcpt) }) &&
		!slices.ContainsFunc(m.Events, func(e trace.Event) bool {
			return e.Event == "rcpt" && slices.ContainsFunc(e.Rcpts, func(r string) bool { return has(r, s.Rcpt) })
		}):
		return false
	case s.Client != "" && !strings.HasPrefix(m.Client, s.Client):
		return false
	case s.Outcome != "" && m.Outcome != s.Outcome:
		return false
	}
	return true
}

type trackingData struct {
	Search   search
	Problem  string
	Outcomes []string
	Messages []*Message
	More     bool
	Searched bool
}

func (c *Console) tracking(w http.ResponseWriter, r *http.Request, v view) {
	s, problem := c.parseSearch(r.URL.Query())
	d := trackingData{Search: s, Problem: problem, Outcomes: Outcomes, Searched: len(r.URL.Query()) > 0}
	if d.Searched && problem == "" {
		var err error
		d.Messages, d.More, err = c.find(r.Context(), s)
		if err != nil {
			d.Problem = c.unreadable("The traces", err)
		}
		if s.ID != "" && len(d.Messages) == 1 && err == nil {
			http.Redirect(w, r, "/message/"+url.PathEscape(d.Messages[0].QueueID), http.StatusSeeOther)
			return
		}
	}
	v.Title, v.Nav, v.Data = "Tracking", "tracking", d
	c.render(w, http.StatusOK, "tracking", v)
}

// storyData is a message's page: the message and the messages linked to
// it (a release's copy, a DSN), each with its events.
type storyData struct {
	Message *Message
	Linked  []*Message
}

// Drove reports whether stage result st drove the decision of m: it is
// the deciding stage, or its verdict was more than continue, or it
// scored.
func (m *Message) Drove(st trace.Stage) bool {
	return st.Name == m.Stage || st.Action != stages.Continue || st.Score != 0
}

func (c *Console) message(w http.ResponseWriter, r *http.Request, v view) {
	id := r.PathValue("id")
	events, err := c.opts.Traces.Find(r.Context(), id)
	if err != nil {
		c.fail(w, v, failCode(err), c.unreadable("The traces", err))
		return
	}
	var d storyData
	all := messages(events)
	pick := slices.IndexFunc(all, func(m *Message) bool { return m.QueueID == id })
	if pick < 0 {
		// A Message-ID: the first message that had it, not a release's
		// copy of it.
		for i, m := range all {
			if m.MessageID != "" && strings.Trim(m.MessageID, "<>") == strings.Trim(id, "<>") {
				pick = i
			}
		}
	}
	for i, m := range all {
		if i == pick {
			d.Message = m
		} else {
			d.Linked = append(d.Linked, m)
		}
	}
	if d.Message == nil {
		c.fail(w, v, http.StatusNotFound, "No trace of that message: it may be older than [trace] retention.")
		return
	}
	v.Title, v.Nav, v.Data = "Message "+d.Message.QueueID, "tracking", d
	c.render(w, http.StatusOK, "message", v)
}
