package console

import (
	"cmp"
	"context"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// Traces are the messages' stories, as state.Traces keeps them (the
// store of a cluster) or FileTraces reads the trace files of one node.
type Traces interface {
	// Find returns the events of the message with queue ID or
	// Message-ID id and of those linked to it, oldest first.
	Find(ctx context.Context, id string) ([]trace.Event, error)
	// Search returns the events f selects, newest first.
	Search(ctx context.Context, f state.TraceFilter) ([]trace.Event, error)
}

// eventsOf is what a Traces may offer to fetch the whole stories of many
// messages at once; without it, the tracking center asks Find for each.
type eventsOf interface {
	EventsOf(ctx context.Context, ids map[string]bool, since, until time.Time) ([]trace.Event, error)
}

// FileTraces reads the trace files state/trace writes under dir.
func FileTraces(dir string) Traces { return fileTraces(dir) }

type fileTraces string

func (d fileTraces) Find(_ context.Context, id string) ([]trace.Event, error) {
	return trace.Find(string(d), id)
}

// Search reads the days from f.Since to f.Until, as state.Traces'
// implementations select.
func (d fileTraces) Search(_ context.Context, f state.TraceFilter) ([]trace.Event, error) {
	var out []trace.Event
	from, rcpt := strings.ToLower(f.From), strings.ToLower(f.Rcpt)
	err := trace.Scan(string(d), f.Since, f.Until, func(e trace.Event) {
		switch {
		case !f.Since.IsZero() && e.Time.Before(f.Since), !f.Until.IsZero() && !e.Time.Before(f.Until),
			f.Event != "" && e.Event != f.Event, f.Action != "" && e.Action != f.Action,
			from != "" && (e.From == nil || !strings.Contains(strings.ToLower(*e.From), from)),
			rcpt != "" && !slices.ContainsFunc(e.Rcpts, func(r string) bool { return strings.Contains(strings.ToLower(r), rcpt) }):
			return
		}
		out = append(out, e)
	})
	slices.SortStableFunc(out, func(a, b trace.Event) int { return b.Time.Compare(a.Time) })
	if n := cmp.Or(f.Limit, 1000); len(out) > n {
		out = out[:n]
	}
	return out, err
}

// EventsOf returns every event of the messages ids from the days since
// to until (a margin of a day around both), in one reading.
func (d fileTraces) EventsOf(_ context.Context, ids map[string]bool, since, until time.Time) ([]trace.Event, error) {
	if !since.IsZero() {
		since = since.Add(-24 * time.Hour)
	}
	if !until.IsZero() {
		until = until.Add(24 * time.Hour)
	}
	var out []trace.Event
	err := trace.Scan(string(d), since, until, func(e trace.Event) {
		if ids[e.QueueID] {
			out = append(out, e)
		}
	})
	return out, err
}

// Message is one message as its trace tells it: who sent it from where,
// what was decided, and where it went.
type Message struct {
	QueueID   string
	Time      time.Time // of its first event
	Node      string    // the node of a cluster that took it (its first event's)
	Client    string
	Helo      string
	TLS       string
	From      *string // nil: not known; "" is the null sender
	Rcpts     []string
	MessageID string
	Size      int64
	// Outcome is a word a person reads: delivered, queued, deferred,
	// bounced, rejected, refused (for now: a temporary refusal),
	// quarantined, released, deleted, discarded or aborted.
	Outcome string
	// The decision: its action, score, deciding stage, reason, policy
	// and the reply given.
	Action, Stage, Reason, Policy, Reply string
	Score                                float64
	Events                               []trace.Event
}

// messages groups events (any order) into messages, newest first.
func messages(events []trace.Event) []*Message {
	byID := map[string]*Message{}
	var out []*Message
	slices.SortStableFunc(events, func(a, b trace.Event) int { return a.Time.Compare(b.Time) })
	for _, e := range events {
		m := byID[e.QueueID]
		if m == nil {
			m = &Message{QueueID: e.QueueID, Time: e.Time}
			byID[e.QueueID] = m
			out = append(out, m)
		}
		m.add(e)
	}
	for _, m := range out {
		m.settle()
	}
	slices.SortStableFunc(out, func(a, b *Message) int { return b.Time.Compare(a.Time) })
	return out
}

var refusals = map[string]string{"reject": "rejected", "tempfail": "refused"}

func (m *Message) add(e trace.Event) {
	m.Events = append(m.Events, e)
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&m.Client, e.Client)
	if m.Node == "" {
		m.Node = e.Node
	}
	set(&m.Helo, e.Helo)
	set(&m.TLS, e.TLS)
	set(&m.MessageID, e.MessageID)
	if e.From != nil {
		m.From = e.From
	}
	if e.Size > 0 {
		m.Size = e.Size
	}
	switch e.Event {
	case "rcpt":
		if refusals[e.Action] == "" {
			m.Rcpts = append(m.Rcpts, e.Rcpts...)
		} else if m.Action == "" {
			// A refused recipient: the message's outcome until one
			// is taken.
			m.Action, m.Stage, m.Reason, m.Reply, m.Score, m.Policy = e.Action, e.Stage, e.Reason, e.Reply, e.Score, e.Policy
		}
	case "data":
		m.Action, m.Stage, m.Reason, m.Reply, m.Score, m.Policy = e.Action, e.Stage, e.Reason, e.Reply, e.Score, e.Policy
	case "mail":
		if e.Action != "" {
			m.Action, m.Reason, m.Reply = e.Action, e.Reason, e.Reply
		}
	case "pickup":
		m.Rcpts = append(m.Rcpts, e.Rcpts...)
		m.Action, m.Reason = "accept", e.Reason
	}
	if e.Event == "data" && m.Reply == "" {
		m.Reply = e.Reply
	}
}

// settle sets the outcome from the events.
func (m *Message) settle() {
	last := map[string]string{} // recipient → its last delivery outcome
	var released, deleted bool
	for _, e := range m.Events {
		switch e.Event {
		case "attempt", "expired":
			for _, r := range e.Rcpts {
				last[r] = e.Action
			}
		case "released":
			released = e.Related != "" || released
		case "deleted":
			deleted = true
		}
	}
	switch {
	case m.Action == "quarantine" && released:
		m.Outcome = "released"
	case deleted:
		m.Outcome = "deleted"
	case m.Action == "quarantine":
		m.Outcome = "quarantined"
	case refusals[m.Action] != "" && len(m.Rcpts) == 0 || m.Action == "reject":
		m.Outcome = refusals[m.Action]
	case m.Action == "tempfail":
		m.Outcome = "refused"
	case m.Action == "discard":
		m.Outcome = "discarded"
	case m.Action == "aborted":
		m.Outcome = "aborted"
	case len(last) == 0 && m.Action == "":
		m.Outcome = "incomplete"
	case len(last) == 0:
		m.Outcome = "queued"
	default:
		m.Outcome = "delivered"
		for _, o := range last {
			switch {
			case o == "bounced":
				m.Outcome = "bounced"
			case o == "deferred" && m.Outcome != "bounced":
				m.Outcome = "deferred"
			}
		}
		if len(last) < len(m.Rcpts) && m.Outcome == "delivered" {
			m.Outcome = "deferred"
		}
	}
}

// Outcomes are the words of Message.Outcome a search may ask for.
var Outcomes = []string{"delivered", "queued", "deferred", "bounced", "rejected", "refused", "quarantined", "released", "deleted"}
