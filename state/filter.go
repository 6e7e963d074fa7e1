package state

import (
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state/trace"
)

// Filter selects quarantined messages relative to a time (the admin API,
// the console, the commands), and the queue commands select queued
// messages with it; zero fields select everything. Window gives the
// QuarantineFilter a store takes.
type Filter struct {
	From      string        // substring of the sender, case-insensitive (see needle)
	Rcpt      string        // substring of any recipient, case-insensitive (see needle)
	Stage     string        // a stage that decided, added to the score, or gave a verdict other than continue
	OlderThan time.Duration // quarantined at least this long ago
	NewerThan time.Duration // quarantined at most this long ago
}

// Match reports whether r passes f at time now.
func (f Filter) Match(r *QuarantineRecord, now time.Time) bool {
	if f.Stage != "" && r.Stage != f.Stage && !slices.ContainsFunc(r.Verdicts, func(v trace.Stage) bool {
		return v.Name == f.Stage && (v.Action != stages.Continue || v.Score > 0)
	}) {
		return false
	}
	return f.MatchMessage(r.From, r.Rcpts, r.Time, now)
}

// MatchMessage reports whether a message from from to rcpts, received at
// at, passes f's sender, recipient and age tests at time now; the queue
// commands select queued messages with it.
func (f Filter) MatchMessage(from string, rcpts []string, at, now time.Time) bool {
	if f.From != "" && !containsFold(from, needle(f.From)) {
		return false
	}
	if rcpt := needle(f.Rcpt); f.Rcpt != "" && !slices.ContainsFunc(rcpts, func(a string) bool { return containsFold(a, rcpt) }) {
		return false
	}
	age := now.Sub(at)
	if f.OlderThan > 0 && age < f.OlderThan {
		return false
	}
	if f.NewerThan > 0 && age > f.NewerThan {
		return false
	}
	return true
}

// needle is what a From or Rcpt filter looks for. Records hold addresses
// in the canonical form of package address; a filter that is a whole
// address or domain is put in that form too, so that "ceo@example.test."
// finds ceo@example.test and "bücher.test" its A-labels. Anything else is
// looked for as written.
func needle(s string) string {
	if a, err := address.Parse(s); err == nil {
		return a
	}
	at, rest := "", s
	if r, ok := strings.CutPrefix(s, "@"); ok {
		at, rest = "@", r
	}
	if d, err := address.Domain(rest); err == nil {
		return at + d
	}
	return s
}

func containsFold(s, sub string) bool {
	return strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}

// Window is f at now, for a store.
func (f Filter) Window(now time.Time) QuarantineFilter {
	qf := QuarantineFilter{From: needle(f.From), Rcpt: needle(f.Rcpt), Stage: f.Stage}
	if f.NewerThan > 0 {
		qf.Since = now.Add(-f.NewerThan)
	}
	if f.OlderThan > 0 {
		qf.Until = now.Add(-f.OlderThan).Add(time.Microsecond) // age >= OlderThan
	}
	return qf
}
