package pipeline

import (
	"cmp"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state/trace"
)

// Generic replies: they reach the sender, so they say nothing of what a
// stage found (RFC 3463 codes: 5.7.1 delivery not authorized, 4.7.1
// temporary policy failure, 4.3.0 temporary system failure).
var (
	rejectReply   = stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected"}
	tempFailReply = stages.Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Try again later"}
	// errorReply is the tempfail of a broken stage: the fault is ours,
	// not the message's.
	errorReply = stages.Reply{Code: 451, Enhanced: [3]int{4, 3, 0}, Text: "Temporary failure, try again later"}
)

// verdict is a candidate for what decides a phase.
type verdict struct {
	action stages.Action
	stage  string // for a threshold, the stage that added most of the score; "" for nobody
	reason string
	reply  *stages.Reply
	// byStages is, for a decision a score threshold made, what the
	// stages' own actions decided beneath it (Continue or Tag); nil for
	// a decision of a stage. A recipient's allow entry overrules only
	// the threshold.
	byStages *verdict
}

func (o outcome) verdict() verdict {
	reason := o.res.Reason
	if o.mapped != "" {
		reason = join(reason, o.mapped)
	}
	if o.res.Error != "" {
		reason = o.res.Reason + ": " + o.res.Error
	}
	reply := o.reply
	if o.mapped != "" {
		reply = classOf(reply, o.res.Action)
	}
	return verdict{action: o.res.Action, stage: o.res.Name, reason: reason, reply: reply}
}

// classOf gives a stage's reply the class of the action a result mapping
// chose. A stage replies for a result as its own action would (spf's fail
// with 550 5.7.23), and the admin may map the word to tempfail instead:
// the text and the enhanced code's subject and detail still say why, the
// class becomes that of the action (RFC 3463 §2: the first digit). A
// reply of neither class is left for replyFor to refuse.
func classOf(r *stages.Reply, a stages.Action) *stages.Reply {
	var def stages.Reply
	switch a {
	case stages.Reject:
		def = rejectReply
	case stages.TempFail:
		def = tempFailReply
	default:
		return r
	}
	if r == nil || r.Code/100 == def.Code/100 || (r.Code/100 != 4 && r.Code/100 != 5) {
		return r
	}
	c := *r
	c.Code = def.Code
	if c.Enhanced != [3]int{} {
		c.Enhanced[0] = def.Code / 100
	}
	return &c
}

// merge picks what decides a phase, given the strongest verdict carried
// from earlier phases, the outcomes of this phase in chain order, the total
// score and the policy whose thresholds apply.
//
// The strongest action wins: reject > tempfail > quarantine > tag >
// continue; among equals, the first in chain order. The score thresholds
// count as one more verdict, losing ties to a stage so that its reply and
// reason are kept.
//
// An Accept stops the chain (runChain ran nothing after it) and exempts the
// message from the thresholds and from tagging. What stages before it
// asked for still stands when it is Quarantine or stronger: in a chain
// "clamav, allowlist, spam" a virus is refused even from an allow-listed
// sender, while "allowlist" first exempts the sender from everything.
//
// scored are the outcomes of the transaction so far, this phase included:
// a threshold names the stages whose scores reached it.
func merge(carried verdict, outs, scored []outcome, total float64, pol policy.Effective) verdict {
	best := carried
	var accept *verdict
	for _, o := range outs {
		v := o.verdict()
		if v.action == stages.Accept {
			accept = &v
			break
		}
		if v.action > best.action {
			best = v
		}
	}
	if accept != nil && best.action < stages.Quarantine {
		return *accept
	}
	if t := threshold(total, pol); t.action > best.action {
		t.stage, t.reason = scorers(t.reason, scored)
		t.byStages = &best
		return t
	}
	return best
}

// maxScorers bounds how many stages a threshold's reason names.
const maxScorers = 5

// scorers names the stages that added to the score, highest first, after
// the threshold's reason, so that a decision by score says who scored
// ("…; scored by spam 9 (BODY_PRIZE=2,…), dnsbl 3 (listed)"), and returns
// the top one as the deciding stage: the log's stage=, the trace, the
// quarantine record and `quarantine list -stage` all name it.
func scorers(reason string, scored []outcome) (string, string) {
	var pos []trace.Stage
	for _, o := range scored {
		if o.res.Score > 0 {
			pos = append(pos, o.res)
		}
	}
	if len(pos) == 0 {
		return "", reason
	}
	slices.SortStableFunc(pos, func(a, b trace.Stage) int { return cmp.Compare(b.Score, a.Score) })
	var b strings.Builder
	b.WriteString(reason)
	b.WriteString("; scored by ")
	for i, r := range pos[:min(len(pos), maxScorers)] {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %g", r.Name, r.Score)
		// The stage's own words say which rules: spam lists its hits
		// (GTUBE=1000,MISSING_DATE=1), others their result word.
		why := r.Reason
		if why == "" || len(why) > 80 {
			why = r.Result
		}
		if why != "" {
			fmt.Fprintf(&b, " (%s)", why)
		}
	}
	if len(pos) > maxScorers {
		fmt.Fprintf(&b, " and %d more", len(pos)-maxScorers)
	}
	return pos[0].Name, b.String()
}

// threshold maps the total score to an action. A threshold of zero or less
// is off: the config loader fills in defaults, so zero means a caller that
// wants no thresholds.
func threshold(total float64, pol policy.Effective) verdict {
	for _, t := range []struct {
		action stages.Action
		key    string
		limit  float64
	}{
		{stages.Reject, "reject_score", pol.RejectScore},
		{stages.Quarantine, "quarantine_score", pol.QuarantineScore},
		{stages.Tag, "tag_score", pol.TagScore},
	} {
		if t.limit > 0 && total >= t.limit {
			return verdict{action: t.action, reason: fmt.Sprintf("score %g reached %s %g of policy %s", total, t.key, t.limit, pol.Name)}
		}
	}
	return verdict{}
}

// join joins two parts of a reason.
func join(a, b string) string {
	if a == "" {
		return b
	}
	return a + "; " + b
}

// replyFor returns the reply for a decision: the deciding stage's when it
// is valid for the action, else the generic default. A stage's reply is
// checked because a wrong one is dangerous: a 250 on a Reject would drop
// the message in silence.
func replyFor(v verdict, log *slog.Logger) *stages.Reply {
	var def stages.Reply
	switch v.action {
	case stages.Reject:
		def = rejectReply
	case stages.TempFail:
		def = tempFailReply
	default:
		return nil
	}
	if v.reply == nil {
		return &def
	}
	r := *v.reply
	class := def.Code / 100
	if r.Code/100 != class || (r.Enhanced != [3]int{} && r.Enhanced[0] != class) ||
		r.Text == "" || strings.ContainsAny(r.Text, "\r\n") {
		log.Warn("stage reply not valid for its action; using the default", "stage", v.stage, "action", v.action.String(), "reply", r.String())
		return &def
	}
	return &r
}
