// Package filetype checks the types of a message's attachments by their
// content, not by what they claim to be: it walks the MIME structure,
// tells each file's real type by its first bytes (magic numbers, with
// github.com/gabriel-vasile/mimetype), looks into zip and rar archives one
// level, and checks block- and allow-lists by type and by extension. A
// program named invoice.pdf is its own result, mismatch.
package filetype

import (
	"context"
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Filter is one configured filetype stage.
type Filter struct {
	blockTypes, allowTypes []string
	blockExts, allowExts   map[string]bool
	archives               bool
	maxDepth, maxParts     int
	maxMembers             int
	maxBytes               int64
}

var _ stages.Filter = (*Filter)(nil)

// Results are the result words of the kind's verdicts, most serious first:
// a message with several findings reports the first of these it has.
func Results() []string {
	return []string{"mismatch", "blocked", "too-complex", "encrypted", "malformed", "clean"}
}

// Info declares the data phase: the kind reads the whole message.
func (f *Filter) Info() stages.Info {
	return stages.Info{
		Kind:    "filetype",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody,
		Results: Results(),
	}
}

// Replies go to the sender, so they never say which part or which type:
// that is in Reason, for the log. RFC 3463 §3.8: X.7.1, delivery not
// authorized, message refused.
var (
	refusedType = stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message refused: attachment type not accepted"}
	unchecked   = stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message refused: attachments could not be checked"}
)

// defaultFor is each word's action and reply. A mismatch, a blocked type
// and a message beyond the limits are refused; an encrypted archive and
// broken MIME are reported and let through (what could be read was
// checked), for [stage.results] to map to another action. The reply goes
// with the word whatever the action, so a mapping to reject or tempfail
// has one.
func defaultFor(word string) (stages.Action, stages.Reply) {
	switch word {
	case "mismatch", "blocked":
		return stages.Reject, refusedType
	case "too-complex":
		return stages.Reject, unchecked
	}
	return stages.Continue, unchecked
}

// Run walks the message and reports the most serious finding. Nothing in
// the message is a stage error: broken MIME is the result malformed. Only
// a body that cannot be opened, or ctx ending, is.
func (f *Filter) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	w := &walker{f: f, ctx: ctx, found: map[string]*finding{}}
	if err := w.message(tx.Header, tx.Body); err != nil {
		return stages.Verdict{}, err
	}
	for _, word := range Results() {
		fd := w.found[word]
		if fd == nil {
			continue
		}
		action, r := defaultFor(word)
		reason := fd.reason
		if fd.more > 0 {
			reason += fmt.Sprintf(" (and %d more)", fd.more)
		}
		if others := w.others(word); len(others) > 0 {
			reason += "; also " + others
		}
		return stages.Verdict{Action: action, Result: word, Reason: reason, Reply: &r}, nil
	}
	return stages.Verdict{Result: "clean", Reason: fmt.Sprintf("%d files checked", w.files)}, nil
}

// finding is the first of one result word, and how many more there were.
type finding struct {
	reason string
	more   int
}

// others lists the words found besides word, for the reason.
func (w *walker) others(word string) string {
	var s []string
	for _, o := range Results() {
		if o != word && w.found[o] != nil {
			s = append(s, o)
		}
	}
	return strings.Join(s, ", ")
}
