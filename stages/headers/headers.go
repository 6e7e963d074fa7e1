// Package headers rewrites message header fields: rules that add, set,
// remove or rewrite fields, plus built-in options for the fields a gateway
// usually owns: spam score fields, Authentication-Results (RFC 8601), and
// the removal of internal fields forged from outside.
//
// The stage never changes the message itself: it returns edits, which the
// pipeline applies. To compute edits that later rules can build on, it
// applies them to its own copy of the header as it goes, with the same
// meaning the pipeline gives them.
package headers

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Headers is one configured headers stage.
type Headers struct {
	hostname    string
	internal    []*regexp.Regexp // remove_internal, as whole-name patterns
	spamHeaders bool
	spamPrefix  string
	threshold   float64
	authResults bool
	rules       []rule
}

var _ stages.Filter = (*Headers)(nil)

// Info declares the data phase, the header and the verdicts of earlier
// stages (for scores and authentication results), and edits.
func (f *Headers) Info() stages.Info {
	return stages.Info{
		Kind:    "headers",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedResults,
		Edits:   true,
		Results: Results(),
	}
}

// Results are the result words of the kind's verdicts.
func Results() []string { return []string{"edited", "unchanged"} }

// Run computes the edits: first remove_internal, then
// authentication_results and spam_headers, then the rules in order, each
// seeing the header as the ones before left it. The result is "edited" or
// "unchanged"; an edit that would make an invalid field is left out and
// named in the reason. It never fails.
func (f *Headers) Run(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	e := f.edit(tx)
	v := stages.Verdict{Result: "unchanged", Edits: e.edits}
	if len(e.edits) > 0 {
		v.Result = "edited"
	}
	v.Reason = fmt.Sprintf("%d edits", len(e.edits))
	if len(e.skipped) > 0 {
		v.Reason += "; skipped: " + strings.Join(e.skipped, "; ")
	}
	return v, nil
}

// edit runs every step on a copy of tx's header.
func (f *Headers) edit(tx *stages.Transaction) *editor {
	e := &editor{h: slices.Clone(tx.Header)}
	e.step = "remove_internal"
	for _, re := range f.internal {
		e.removeNames(func(name string) bool { return re.MatchString(name) })
	}
	if f.authResults {
		f.addAuthResults(e, tx)
	}
	if f.spamHeaders {
		f.addSpamHeaders(e, tx.Results)
	}
	vars := vars(f.hostname, tx)
	for i, r := range f.rules {
		e.step = fmt.Sprintf("rule[%d]", i)
		r.apply(e, vars)
	}
	return e
}

// apply runs one rule.
func (r rule) apply(e *editor, vars map[string]string) {
	switch r.action {
	case "add":
		if v := r.value.expand(vars); strings.Trim(v, " \t") != "" {
			e.add(r.name, v)
		}
	case "set":
		e.set(r.name, r.value.expand(vars))
	case "remove":
		matchName := func(name string) bool { return strings.EqualFold(name, r.name) }
		if r.nameRegex != nil {
			matchName = r.nameRegex.MatchString
		}
		if r.pattern == nil {
			e.removeNames(matchName)
			break
		}
		e.each(matchName, func(f stages.Field) (string, bool) {
			text, _ := decode(f.Value)
			return "", r.pattern.MatchString(text)
		})
	case "rewrite":
		e.each(func(name string) bool { return strings.EqualFold(name, r.name) }, func(f stages.Field) (string, bool) {
			text, encoded := decode(f.Value)
			if !r.pattern.MatchString(text) {
				return "", false
			}
			v := r.pattern.ReplaceAllString(text, r.replacement)
			if v == text {
				return "", false
			}
			if encoded {
				v = encode(v)
			}
			return v, true
		})
	}
}
