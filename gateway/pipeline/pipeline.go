// Package pipeline runs the configured filter stages for each phase of an
// SMTP transaction and merges what they found into one Decision.
//
// For every stage that declared the phase it enforces a per-call timeout,
// recovers a panic, applies the stage's on_error when the stage breaks,
// applies the stage's edits, and records the stage's latency, verdict and
// errors as metrics and one log line. Stages that do not edit run
// concurrently, so a message waits for the slowest check rather than the sum
// of all; editing stages run alone, in config order, each seeing the edits
// of the ones before it. Sealing stages (stages.Info.Seals: a DKIM signer)
// run last, wherever they are configured: at the end of a data phase that
// delivers or quarantines the message, after the policy's tag and after an
// Accept too, so that nothing changes what they signed.
//
// A caller builds one Pipeline per configuration with New, starts a Session
// per SMTP connection with Begin, runs the connect and helo phases on it,
// and runs each transaction (mail, rcpt, data) on a Fork of it:
//
//	s := p.Begin()
//	d := s.Run(ctx, stages.Connect, tx, log)
//	t := s.Fork() // at each MAIL FROM
//	d = t.Run(ctx, stages.Mail, tx, log)
//
// The pipeline decides but never speaks SMTP: gateway/smtpd turns a
// Decision into a reply.
//
// The pipeline also applies the [policy] of package policy around the
// stages: the allow- and block-lists are checked before the stages of each
// phase and show in the trace as stages of kind "policy" (policy.allow,
// policy.block); result mappings turn a stage's result word into the
// action taken; and the thresholds, subject tag and tag headers are those
// of the transaction's policy, which its recipients decide
// (policy.Policy.For).
//
// How smtpd uses this: nothing beyond running the phases. A message has one
// policy, so at each RCPT the pipeline compares the recipient's policy with
// that of the recipients accepted before it; when they differ, the decision
// is TempFail with Reply 452 4.5.3 and Stage "policy.split", before any
// stage runs. smtpd answers it like any other TempFail at RCPT (the
// recipient is left out of the transaction), and the client sends that
// recipient again in a transaction of its own: nobody is accepted and then
// bounced. The first accepted recipient fixes the policy (Decision.Policy
// names it); a refused one does not. Before any recipient is known, a score
// rejects only if it reaches the reject_score of every policy.
//
// The recipients' own lists (Options.UserLists, kept by the console) are
// checked at RCPT, after the site's block-list: an entry of the recipient
// that blocks the sender refuses that recipient (policy.user_block); one
// that allows the sender delivers what the score thresholds would
// otherwise quarantine or tag (policy.user_allow), while what a stage
// chose by its own action stays (a virus quarantined or refused, a file
// type, DMARC p=quarantine, a sender SPF refuses), and so does a score
// over reject_score: a sender is easy to forge. Whether the sender is allowed is part of the message's
// policy: a recipient who allows it and one who does not are split as two
// policies are (452 4.5.3).
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

// DefaultTimeout bounds a stage call when its StageSpec gives no timeout, so
// that no stage can hold a client forever.
const DefaultTimeout = 10 * time.Second

// onErrorActions is the verdict of a stage call that broke (returned an
// error, timed out, panicked or returned something invalid), by the
// stage's on_error as configured ("" is tempfail): 451 for tempfail,
// the action of the same name, and for skip, Continue: the stage is left
// out of this call.
var onErrorActions = map[string]stages.Action{"tempfail": stages.TempFail, "accept": stages.Accept,
	"reject": stages.Reject, "quarantine": stages.Quarantine, "skip": stages.Continue}

// StageSpec is one stage of the chain as configured.
type StageSpec struct {
	Stage   stages.Stage
	OnError string        // on_error as configured (see onErrorActions); "" is tempfail
	Timeout time.Duration // per call; 0 means DefaultTimeout
	// Results maps the stage's result words to the action the pipeline
	// takes instead of the stage's own ([stage.results], see
	// policy.StageConfig.ResultActions). Accept is not allowed.
	Results map[string]stages.Action
}

// Options are the pipeline's optional collaborators.
type Options struct {
	// Logger is used when Run is given no logger; nil discards.
	Logger *slog.Logger
	// Metrics receive the per-stage metrics; nil records none.
	Metrics *Metrics
	// UserLists are the recipients' own allow- and block-lists; nil:
	// none.
	UserLists UserLists
}

// UserLists are the recipients' own lists, as state.Lists keeps them.
type UserLists interface {
	Entries(ctx context.Context, owner string) ([]state.ListEntry, error)
}

// Pipeline is a configured chain of stages. It is safe for concurrent use;
// the per-transaction state lives in a Session.
type Pipeline struct {
	stages []stage
	pol    policy.Policy
	def    policy.Effective // the policy of a transaction without recipients
	// early is the policy of the phases before the first recipient: the
	// default, with the reject_score of the most lenient policy, so that no
	// message is refused by its score before its recipients are known if
	// the policy of some recipient would take it.
	early policy.Effective
	log   *slog.Logger
	m     *Metrics
	lists UserLists
}

// stage is a StageSpec with what the pipeline needs of it at every call.
type stage struct {
	stages.Stage
	name    string
	info    stages.Info // asked once: for a plugin it is a round trip
	onError string
	timeout time.Duration
	results map[string]stages.Action
	// timeoutErr is the cause of a per-call timeout; it wraps
	// context.DeadlineExceeded so that timeouts are told apart.
	timeoutErr error
}

// New builds a pipeline from the stages in chain order.
func New(specs []StageSpec, pol policy.Policy, opts Options) (*Pipeline, error) {
	if err := pol.Check(); err != nil {
		return nil, err
	}
	p := &Pipeline{pol: pol, def: pol.Default(), early: pol.Default(), log: opts.Logger, lists: opts.UserLists}
	for _, e := range pol.All() {
		// 0 is a threshold that is off: the most lenient of all.
		if e.RejectScore <= 0 || p.early.RejectScore <= 0 {
			p.early.RejectScore = 0
		} else {
			p.early.RejectScore = max(p.early.RejectScore, e.RejectScore)
		}
	}
	if p.log == nil {
		p.log = slog.New(slog.DiscardHandler)
	}
	seen := make(map[string]bool)
	for i, sp := range specs {
		if sp.Stage == nil {
			return nil, fmt.Errorf("stage %d: no stage", i+1)
		}
		name := sp.Stage.Name()
		switch {
		case name == "":
			return nil, fmt.Errorf("stage %d: empty name", i+1)
		case seen[name]:
			return nil, fmt.Errorf("stage %q: name used twice", name)
		}
		seen[name] = true
		info := sp.Stage.Info()
		if info.Phases&stages.AllPhases == 0 {
			return nil, fmt.Errorf("stage %q (%s): declares no phase", name, info.Kind)
		}
		if info.Seals && (info.Phases&stages.AllPhases != stages.Data || !info.Edits) {
			// A seal is an edit over the whole message, which exists
			// at data only.
			return nil, fmt.Errorf("stage %q (%s): seals, so it must declare edits and the data phase only", name, info.Kind)
		}
		if sp.OnError == "" {
			sp.OnError = "tempfail"
		}
		if _, ok := onErrorActions[sp.OnError]; !ok {
			return nil, fmt.Errorf("stage %q: invalid on_error %q", name, sp.OnError)
		}
		for result, a := range sp.Results {
			if a >= stages.Accept {
				return nil, fmt.Errorf("stage %q: results: %q maps to %s; expect continue, tag, quarantine, tempfail or reject", name, result, a)
			}
		}
		timeout := sp.Timeout
		if timeout <= 0 {
			timeout = DefaultTimeout
		}
		p.stages = append(p.stages, stage{
			Stage:      sp.Stage,
			name:       name,
			info:       info,
			onError:    sp.OnError,
			timeout:    timeout,
			results:    sp.Results,
			timeoutErr: fmt.Errorf("timed out after %s: %w", timeout, context.DeadlineExceeded),
		})
	}
	m := opts.Metrics
	if m == nil {
		m = NewMetrics(nil)
	}
	// A stage's error and timeout counters exist, at 0, as soon as it is
	// configured: an alert on their rate works before the first failure.
	for _, sg := range p.stages {
		m.errors.WithLabelValues(sg.name, sg.info.Kind)
		m.timeouts.WithLabelValues(sg.name, sg.info.Kind)
	}
	p.m = m
	return p, nil
}

// Decision is what the chain decided for one phase, with every verdict of
// the earlier phases of the session taken into account.
type Decision struct {
	Action stages.Action // after merge and thresholds
	Score  float64       // the session's total so far, this phase included
	// Reply is the reply for Reject and TempFail: the deciding stage's own
	// when it gave a valid one, else a generic default. Nil for the other
	// actions.
	Reply        *stages.Reply
	Stage        string        // the stage that decided; for a score threshold, the one that added most of the score; "" for nobody
	Reason       string        // detail for the log, never for the client
	Policy       string        // the name of the policy applied: policy.DefaultName or an override's
	Trace        []trace.Stage // every stage that ran in this phase, in chain order, sealing stages last
	BodyReplaced bool          // a stage replaced tx.Body with a stages.BytesBody
	// ByScore is true when a score threshold decided, not the action of a
	// stage: only such a hold may an end user release (package console).
	ByScore bool
}

// Session is the running state of one SMTP session for the pipeline: the
// score, the verdicts and the Tag, Quarantine or Accept carried from one
// phase to the next. Create one per connection with Begin, run the connect
// and helo phases on it, and Fork it for each transaction (MAIL FROM), so
// that the connect and helo verdicts count in every transaction while one
// transaction's verdicts never leak into the next.
//
// A phase that ends in Reject or TempFail leaves the session as it was: the
// command it judged did not happen, so a refused recipient adds no score.
// Tag and Quarantine carry forward and take effect at data; an Accept at
// connect, helo or mail holds for the rest of the session (no more stages
// run), an Accept at rcpt only accepts that recipient.
//
// A Session is not safe for concurrent use, like the SMTP session it serves.
type Session struct {
	p     *Pipeline
	score float64
	// outs are the stage calls of the phases that went through, in order:
	// their verdicts carry forward, and stages that need results see them.
	outs   []outcome
	accept *verdict          // an Accept that holds for the rest of the session
	eff    *policy.Effective // the transaction's policy, set by its first recipient
	// allowed is the entry of the recipients' own allow-lists that
	// allows the transaction's sender ("": none), set with eff; rcptAllow
	// is that of the recipient being judged.
	allowed, rcptAllow string
}

// Begin starts the state of one SMTP session.
func (p *Pipeline) Begin() *Session { return &Session{p: p} }

// Fork returns an independent copy of the state so far.
func (s *Session) Fork() *Session {
	c := *s
	c.outs = slices.Clone(s.outs)
	return &c
}

// splitReply defers a recipient whose policy differs from the
// transaction's. 452 is what RFC 5321 §4.5.3.1.10 has a server answer to
// recipients beyond what it takes in one transaction; the client delivers
// to the recipients accepted so far and sends the others again in another
// transaction. 4.5.3 is "too many recipients" (RFC 3463 §3.6).
var splitReply = stages.Reply{Code: 452, Enhanced: [3]int{4, 5, 3}, Text: "Recipients with different policies, send separately"}

// Run runs the stages that declared ph, applies their edits to tx and
// returns the decision. ctx bounds the whole phase (the per-message
// deadline); each call is further bounded by its stage's timeout. log is the
// per-message logger; nil uses Options.Logger.
//
// Before the stages, the policy's lists are checked for what ph adds to tx
// (see policy.List.Match): a block entry rejects, even after an allow entry
// matched; an allow entry accepts without running the stages, as a stage's
// Accept does. At rcpt, the recipient's policy (policy.Policy.For) must be
// the one of the recipients accepted before it, else the recipient is
// deferred with 452 4.5.3.
//
// When the data phase ends in Tag, the policy's subject_tag and
// tag_headers are applied to tx, so what is relayed (and what a dry run
// shows) carries them.
func (s *Session) Run(ctx context.Context, ph stages.Phase, tx *stages.Transaction, log *slog.Logger) Decision {
	if log == nil {
		log = s.p.log
	}
	eff := s.policy(ph)
	if hit, ok := s.p.pol.Block.Match(ph, tx); ok {
		d, _ := s.listed(ctx, ph, "policy.block", stages.Reject, hit, eff, log)
		return d
	}
	if s.accept != nil {
		d := Decision{Action: stages.Accept, Score: s.score, Stage: s.accept.stage, Reason: s.accept.reason, Policy: eff.Name}
		s.seal(ctx, ph, tx, &d, eff, log)
		return d
	}
	if ph == stages.Rcpt && len(tx.Rcpts) > 0 {
		rcpt := tx.Rcpts[len(tx.Rcpts)-1]
		eff = s.p.pol.For(rcpt)
		if s.eff != nil && !policy.SamePolicy(*s.eff, eff) {
			return s.split(ctx, rcpt, eff, log)
		}
		if d, refused := s.userLists(ctx, rcpt, tx.From, eff, log); refused {
			return d
		}
	}
	if hit, ok := s.p.pol.Allow.Match(ph, tx); ok {
		d, v := s.listed(ctx, ph, "policy.allow", stages.Accept, hit, eff, log)
		s.commit(ph, eff, &v)
		s.seal(ctx, ph, tx, &d, eff, log)
		return d
	}

	prior := make([]stages.Result, len(s.outs))
	for i, o := range s.outs {
		prior[i] = o.result()
	}
	outs := s.p.runChain(ctx, ph, tx, prior, eff, false, log)

	phaseScore := 0.0
	d := Decision{Trace: make([]trace.Stage, len(outs)), Policy: eff.Name}
	for i, o := range outs {
		phaseScore += o.res.Score
		d.Trace[i] = o.res
		d.BodyReplaced = d.BodyReplaced || o.bodyReplaced
	}
	d.Score = s.score + phaseScore
	decided := merge(s.carried(eff), outs, append(slices.Clone(s.outs), outs...), d.Score, eff)
	d.Action, d.Stage, d.Reason = decided.action, decided.stage, decided.reason
	d.ByScore = decided.byStages != nil
	d.Reply = replyFor(decided, log)
	// An allow entry overrules the score thresholds only: an action a
	// stage chose (a virus quarantined, DMARC p=quarantine) stands, as a
	// sender is easy to forge.
	if ph == stages.Data && s.allowed != "" && decided.byStages != nil && (d.Action == stages.Quarantine || d.Action == stages.Tag) {
		const name = "policy.user_allow"
		reason := fmt.Sprintf("%s (%s: %s) overruled by the recipients' allow-lists: %s", d.Action, d.Stage, d.Reason, s.allowed)
		log.LogAttrs(ctx, slog.LevelInfo, "policy list", slog.String("list", name), slog.String("overruled", d.Action.String()), slog.String("entry", s.allowed))
		d.Trace = append(d.Trace, trace.Stage{Name: name, Kind: "policy", Phase: ph.String(), Action: stages.Continue, Result: "allowed", Reason: reason})
		d.Action, d.Stage, d.Reason = stages.Continue, name, reason
		if below := decided.byStages; below.action == stages.Tag {
			d.Action, d.Stage, d.Reason = below.action, below.stage, below.reason
		}
	}

	if d.Action == stages.Reject || d.Action == stages.TempFail {
		return d
	}
	s.score += phaseScore
	s.outs = append(s.outs, outs...)
	var accept *verdict
	if d.Action == stages.Accept {
		accept = &decided
	}
	s.commit(ph, eff, accept)
	if ph == stages.Data && d.Action == stages.Tag {
		tag(tx, eff, log)
	}
	s.seal(ctx, ph, tx, &d, eff, log)
	return d
}

// seal runs the sealing stages (stages.Info.Seals) at the end of a data
// phase that delivers or quarantines the message, over the message as it
// leaves: after every other stage's edits and the policy's tag, so no
// change follows their signatures. Their outcomes join d: a score adds
// up, and an action stronger than d's (a broken signer's on_error
// tempfail, say) decides instead; a Tag from them tags nothing, since the
// message is sealed already.
func (s *Session) seal(ctx context.Context, ph stages.Phase, tx *stages.Transaction, d *Decision, eff policy.Effective, log *slog.Logger) {
	if ph != stages.Data || d.Action == stages.Reject || d.Action == stages.TempFail {
		return
	}
	prior := make([]stages.Result, len(s.outs))
	for i, o := range s.outs {
		prior[i] = o.result()
	}
	outs := s.p.runChain(ctx, ph, tx, prior, eff, true, log)
	for _, o := range outs {
		d.Trace = append(d.Trace, o.res)
		d.Score += o.res.Score
		s.score += o.res.Score
		d.BodyReplaced = d.BodyReplaced || o.bodyReplaced
		v := o.verdict()
		if v.action >= stages.Quarantine && v.action != stages.Accept && (d.Action == stages.Accept || v.action > d.Action) {
			d.Action, d.Stage, d.Reason = v.action, v.stage, v.reason
			d.Reply = replyFor(v, log)
		}
	}
	s.outs = append(s.outs, outs...)
}

// policy returns the policy phase ph is judged by until a recipient says
// otherwise.
func (s *Session) policy(ph stages.Phase) policy.Effective {
	switch {
	case s.eff != nil:
		return *s.eff
	case ph&(stages.Connect|stages.Helo|stages.Mail) != 0:
		return s.p.early
	}
	return s.p.def
}

// commit records what a phase that went through decided for the rest of
// the session: an accepted recipient sets the transaction's policy, and an
// Accept before rcpt holds from then on.
func (s *Session) commit(ph stages.Phase, eff policy.Effective, accept *verdict) {
	switch {
	case ph == stages.Rcpt:
		if s.eff == nil {
			s.eff, s.allowed = &eff, s.rcptAllow
		}
	case accept != nil:
		s.accept = accept
	}
}

// carried returns the strongest verdict of the phases before, other than
// Accept, with the results mapped by the override of eff: an override
// applies to the whole transaction, so to the verdicts of the phases that
// ran before its recipient was known too.
func (s *Session) carried(eff policy.Effective) verdict {
	var best verdict
	for _, o := range s.outs {
		if a, how, ok := overrideMapping(eff, o.res.Name, o.res.Result); ok && !o.broke {
			o.res.Action, o.mapped = a, how
		}
		if v := o.verdict(); v.action != stages.Accept && v.action > best.action {
			best = v
		}
	}
	return best
}

// listed is the decision of an allow- or block-list entry, recorded in the
// trace as a stage of kind "policy" so that logs and dry runs show it.
func (s *Session) listed(ctx context.Context, ph stages.Phase, name string, a stages.Action, hit policy.Hit, eff policy.Effective, log *slog.Logger) (Decision, verdict) {
	reason := fmt.Sprintf("%s.%s entry %q matches %s", name, hit.Key, hit.Entry, hit.Value)
	v := verdict{action: a, stage: name, reason: reason}
	log.LogAttrs(ctx, slog.LevelInfo, "policy list", slog.String("list", name), slog.String("phase", ph.String()),
		slog.String("key", hit.Key), slog.String("entry", hit.Entry), slog.String("value", hit.Value), slog.String("action", a.String()))
	return Decision{
		Action: a,
		Score:  s.score,
		Reply:  replyFor(v, log),
		Stage:  name,
		Reason: reason,
		Policy: eff.Name,
		Trace:  []trace.Stage{{Name: name, Kind: "policy", Phase: ph.String(), Action: a, Result: hit.Key, Reason: reason}},
	}, v
}

// userLists checks the recipient's own lists for the sender: a block
// entry refuses the recipient; whether an allow entry matches must be as
// for the recipients accepted before (see the package comment), else the
// recipient is deferred to a transaction of its own. A store that fails
// is logged and passed over: the lists are a convenience, not a defense.
func (s *Session) userLists(ctx context.Context, rcpt, from string, eff policy.Effective, log *slog.Logger) (Decision, bool) {
	s.rcptAllow = ""
	if s.p.lists == nil || from == "" {
		return Decision{}, false
	}
	entries, err := s.p.lists.Entries(ctx, rcpt)
	if err != nil {
		log.Warn("user lists not checked", "rcpt", rcpt, "err", err)
		return Decision{}, false
	}
	e := state.MatchList(entries, from)
	switch {
	case e != nil && e.Kind == state.Block:
		d, _ := s.listed(ctx, stages.Rcpt, "policy.user_block", stages.Reject, policy.Hit{Key: "rcpt " + rcpt, Entry: e.Sender, Value: from}, eff, log)
		return d, true
	case e != nil:
		s.rcptAllow = fmt.Sprintf("%s allows %s", rcpt, e.Sender)
	}
	if s.eff != nil && (s.allowed == "") != (s.rcptAllow == "") {
		const name = "policy.split"
		reason := fmt.Sprintf("the allow-list of %s %s the sender, those of the recipients before it %s", rcpt,
			map[bool]string{true: "has", false: "does not have"}[s.rcptAllow != ""], map[bool]string{true: "do", false: "do not"}[s.allowed != ""])
		log.LogAttrs(ctx, slog.LevelInfo, "policy split", slog.String("rcpt", rcpt), slog.String("reason", reason))
		return Decision{Action: stages.TempFail, Score: s.score, Reply: &splitReply, Stage: name, Reason: reason, Policy: s.eff.Name,
			Trace: []trace.Stage{{Name: name, Kind: "policy", Phase: stages.Rcpt.String(), Action: stages.TempFail, Result: "user_allow", Reason: reason}}}, true
	}
	return Decision{}, false
}

// split defers a recipient whose policy differs from the transaction's.
func (s *Session) split(ctx context.Context, rcpt string, eff policy.Effective, log *slog.Logger) Decision {
	const name = "policy.split"
	reason := fmt.Sprintf("recipient %s has policy %q, the recipients before it %q", rcpt, eff.Name, s.eff.Name)
	log.LogAttrs(ctx, slog.LevelInfo, "policy split", slog.String("rcpt", rcpt),
		slog.String("policy", eff.Name), slog.String("transaction_policy", s.eff.Name))
	return Decision{
		Action: stages.TempFail,
		Score:  s.score,
		Reply:  &splitReply,
		Stage:  name,
		Reason: reason,
		Policy: s.eff.Name,
		Trace:  []trace.Stage{{Name: name, Kind: "policy", Phase: stages.Rcpt.String(), Action: stages.TempFail, Result: eff.Name, Reason: reason}},
	}
}

// tag marks a message the data phase tagged, as its policy says.
func tag(tx *stages.Transaction, eff policy.Effective, log *slog.Logger) {
	var edits []stages.Edit
	if eff.SubjectTag != "" {
		edits = append(edits, stages.Edit{Op: stages.SubjectTag, Value: eff.SubjectTag})
	}
	for _, f := range eff.TagHeaders {
		edits = append(edits, stages.Edit{Op: stages.HeaderAdd, Name: f.Name, Value: f.Value})
	}
	if len(edits) == 0 {
		return
	}
	if err := stages.ApplyEdits(tx, edits); err != nil {
		log.Error("tag message", "policy", eff.Name, "error", err)
	}
}

// outcome is one stage call as the pipeline saw it: its record, and what
// the pipeline needs besides.
type outcome struct {
	res trace.Stage
	// mapped is the result mapping that set res.Action in place of the
	// stage's own, as in "stage results: fail = reject"; "" if none did.
	mapped       string
	broke        bool // the stage broke, and its on_error gave res.Action
	timedOut     bool // it broke by running out of time
	took         time.Duration
	reply        *stages.Reply
	bodyReplaced bool
}

func (o outcome) result() stages.Result {
	return stages.Result{Stage: o.res.Name, Kind: o.res.Kind, Action: o.res.Action, Score: o.res.Score,
		Result: o.res.Result, Reason: o.res.Reason, Errored: o.broke}
}

// mapResult returns the action a result mapping gives a stage's result
// word, and the mapping: the override of eff first, then the stage's own
// [stage.results].
func (sg *stage) mapResult(eff policy.Effective, result string) (stages.Action, string, bool) {
	if a, how, ok := overrideMapping(eff, sg.name, result); ok {
		return a, how, true
	}
	if a, ok := sg.results[result]; ok && result != "" {
		return a, fmt.Sprintf("stage results: %s = %s", result, a), true
	}
	return 0, "", false
}

func overrideMapping(eff policy.Effective, stage, result string) (stages.Action, string, bool) {
	a, ok := eff.Result(stage, result)
	if !ok {
		return 0, "", false
	}
	return a, fmt.Sprintf("policy %s results: %s.%s = %s", eff.Name, stage, result, a), true
}

// runChain runs the stages of phase ph in groups (see groupLen) and returns
// their outcomes in chain order, up to and including the first Accept.
// Result words are mapped to actions under policy eff. seals chooses the
// sealing stages or the others.
func (p *Pipeline) runChain(ctx context.Context, ph stages.Phase, tx *stages.Transaction, prior []stages.Result, eff policy.Effective, seals bool, log *slog.Logger) []outcome {
	var run []*stage
	for i := range p.stages {
		if p.stages[i].info.Phases.Has(ph) && p.stages[i].info.Seals == seals {
			run = append(run, &p.stages[i])
		}
	}
	var outs []outcome
	for len(run) > 0 {
		n := groupLen(run)
		var got []outcome
		if b := batchLen(run); b > 1 {
			// A batch cut short keeps what ran; the next turn goes on.
			if got = p.runBatch(ctx, ph, tx, run[:b], prior, eff, log); len(got) > 0 {
				n = len(got)
			}
		}
		if len(got) == 0 {
			got = p.runGroup(ctx, ph, tx, run[:n], prior, eff, log)
		}
		for i, o := range got {
			p.record(ctx, ph, run[i], o, log)
			prior = append(prior, o.result())
		}
		outs = append(outs, got...)
		if got[len(got)-1].res.Action == stages.Accept {
			break
		}
		run = run[n:]
	}
	return outs
}

// groupLen returns how many stages at the front of run form the next group.
// An editing stage runs alone, so it sees the edits of the stages before it
// and the stages after it see its edits. A stage that needs results starts
// a new group, so it sees the verdicts of every stage before it. Any other
// stage joins the group and runs concurrently with it.
func groupLen(run []*stage) int {
	if run[0].info.Edits {
		return 1
	}
	n := 1
	for n < len(run) && !run[n].info.Edits && run[n].info.Needs&stages.NeedResults == 0 {
		n++
	}
	return n
}

// runGroup runs a group and returns its outcomes in chain order. When a
// stage accepts, the stages after it in the group are cancelled and left
// out, as if the chain had stopped there.
func (p *Pipeline) runGroup(ctx context.Context, ph stages.Phase, tx *stages.Transaction, group []*stage, prior []stages.Result, eff policy.Effective, log *slog.Logger) []outcome {
	if len(group) == 1 {
		o, edits := p.runOne(ctx, ph, group[0], tx, prior, eff, log)
		return []outcome{p.applyEdits(group[0], tx, o, edits)}
	}

	outs := make([]outcome, len(group))
	cancels := make([]context.CancelFunc, len(group))
	done := make(chan int, len(group))
	for i, sg := range group {
		cctx, cancel := context.WithCancel(ctx)
		cancels[i] = cancel
		go func() {
			// Stages in a group never edit (groupLen), so the edits
			// return is always empty.
			outs[i], _ = p.runOne(cctx, ph, sg, tx, prior, eff, log)
			done <- i
		}()
	}
	accepted := len(group)
	for range group {
		i := <-done
		if outs[i].res.Action == stages.Accept && i < accepted {
			accepted = i
			for _, cancel := range cancels[i+1:] {
				cancel()
			}
		}
	}
	for _, cancel := range cancels {
		cancel()
	}
	if accepted < len(group) {
		return outs[:accepted+1]
	}
	return outs
}

// applyEdits applies the edits of an editing stage, which runs alone; a
// set of edits that cannot be applied breaks the stage.
func (p *Pipeline) applyEdits(sg *stage, tx *stages.Transaction, o outcome, edits []stages.Edit) outcome {
	if len(edits) == 0 {
		return o
	}
	if err := stages.ApplyEdits(tx, edits); err != nil {
		return p.failed(sg, o, err)
	}
	o.bodyReplaced = slices.ContainsFunc(edits, func(e stages.Edit) bool { return e.Op == stages.BodyReplace })
	return o
}

// runOne calls one stage and returns its outcome, with on_error applied if
// it broke or its result mapped, and the edits it asked for.
func (p *Pipeline) runOne(ctx context.Context, ph stages.Phase, sg *stage, tx *stages.Transaction, prior []stages.Result, eff policy.Effective, log *slog.Logger) (outcome, []stages.Edit) {
	// Each stage gets its own shallow copy: Results differ per stage, and
	// a stage that outlives its timeout keeps reading a Transaction
	// nobody changes (ApplyEdits replaces slices rather than writing
	// into them).
	stx := *tx
	stx.Results = nil
	if sg.info.Needs&stages.NeedResults != 0 {
		stx.Results = slices.Clone(prior)
	}
	start := time.Now()
	v, err := p.call(ctx, ph, sg, &stx, log)
	return p.finish(ph, sg, v, err, time.Since(start), eff)
}

// finish is the outcome of a call to sg that answered v or err after
// took: on_error applied if it broke (or v may not be returned), its
// result mapped under eff; and the edits it asked for.
func (p *Pipeline) finish(ph stages.Phase, sg *stage, v stages.Verdict, err error, took time.Duration, eff policy.Effective) (outcome, []stages.Edit) {
	o := outcome{res: trace.Stage{Name: sg.name, Kind: sg.info.Kind, Phase: ph.String()}, took: took}
	o.res.DurationMS = float64(o.took.Microseconds()) / 1000
	if err == nil {
		err = checkVerdict(ph, sg, v)
	}
	if err != nil {
		return p.failed(sg, o, err), nil
	}
	o.res.Action, o.res.Score, o.res.Result, o.res.Reason = v.Action, v.Score, v.Result, v.Reason
	if a, how, ok := sg.mapResult(eff, v.Result); ok {
		o.res.Action, o.mapped = a, how
	}
	o.reply = v.Reply
	return o, v.Edits
}

// checkVerdict refuses what a stage may not return; the stage then counts
// as broken.
func checkVerdict(ph stages.Phase, sg *stage, v stages.Verdict) error {
	switch {
	case v.Action > stages.Accept:
		return fmt.Errorf("unknown action %s", v.Action)
	case len(v.Edits) > 0 && !sg.info.Edits:
		return errors.New("returned edits but does not declare edits")
	case len(v.Edits) > 0 && ph != stages.Data:
		// The header and body exist only at data; milter modifications
		// are end-of-message actions too.
		return fmt.Errorf("returned edits in the %s phase; edits apply at data only", ph)
	}
	return nil
}

// deadlineStage is a stage that returns by the time its context ends,
// whatever the process behind it does, as a plugin host's does
// (host.Plugin.ReturnsByDeadline).
type deadlineStage interface{ ReturnsByDeadline() }

// call runs the stage with its timeout. A stage that may ignore its
// context runs in a goroutine of its own, so that it cannot hold the
// message past the timeout; one that returns by its deadline is called
// directly, which spares a goroutine per call (and its stack's growth).
// Either way a panic is recovered and reported as an error.
func (p *Pipeline) call(ctx context.Context, ph stages.Phase, sg *stage, tx *stages.Transaction, log *slog.Logger) (v stages.Verdict, err error) {
	ctx, cancel := context.WithTimeoutCause(ctx, sg.timeout, sg.timeoutErr)
	defer cancel()
	if _, ok := sg.Stage.(deadlineStage); ok {
		defer func() {
			if r := recover(); r != nil {
				log.Error("stage panicked", "stage", sg.name, "kind", sg.info.Kind, "panic", r, "stack", string(debug.Stack()))
				v, err = stages.Verdict{}, fmt.Errorf("panic: %v", r)
			}
		}()
		v, err = sg.Run(ctx, ph, tx)
		if err != nil && ctx.Err() != nil {
			// It gave up with its context: say why the context ended
			// (the stage's timeout), as for a stage abandoned below.
			err = context.Cause(ctx)
		}
		return v, err
	}
	type answer struct {
		v   stages.Verdict
		err error
	}
	// Buffered: a stage answering after the timeout must not block forever
	// on a send nobody receives.
	ch := make(chan answer, 1)
	go func() {
		defer func() {
			if r := recover(); r != nil {
				log.Error("stage panicked", "stage", sg.name, "kind", sg.info.Kind, "panic", r, "stack", string(debug.Stack()))
				ch <- answer{err: fmt.Errorf("panic: %v", r)}
			}
		}()
		v, err := sg.Run(ctx, ph, tx)
		ch <- answer{v, err}
	}()
	select {
	case a := <-ch:
		return a.v, a.err
	case <-ctx.Done():
		return stages.Verdict{}, context.Cause(ctx)
	}
}

// failed turns the outcome of a broken stage into its on_error verdict.
func (p *Pipeline) failed(sg *stage, o outcome, err error) outcome {
	o.res.Error, o.broke, o.timedOut = err.Error(), true, errors.Is(err, context.DeadlineExceeded)
	o.res.Score, o.res.Result, o.res.Reason = 0, "", "on_error "+sg.onError
	o.res.Action, o.reply = onErrorActions[sg.onError], nil
	if o.res.Action == stages.TempFail {
		o.reply = &errorReply
	}
	return o
}

// record counts and logs one stage call: one line per stage per message, at
// Info for the data phase (what an operator asks about) and Debug before.
func (p *Pipeline) record(ctx context.Context, ph stages.Phase, sg *stage, o outcome, log *slog.Logger) {
	p.m.observe(sg, ph, o)
	level := slog.LevelDebug
	if ph == stages.Data {
		level = slog.LevelInfo
	}
	if !log.Enabled(ctx, level) {
		return
	}
	attrs := []slog.Attr{
		slog.String("stage", sg.name),
		slog.String("kind", sg.info.Kind),
		slog.String("phase", ph.String()),
		slog.String("action", o.res.Action.String()),
		slog.Float64("score", o.res.Score),
		slog.String("result", o.res.Result),
		slog.String("reason", o.res.Reason),
		slog.Duration("duration", o.took),
	}
	if o.mapped != "" {
		attrs = append(attrs, slog.String("mapped", o.mapped))
	}
	if o.res.Error != "" {
		attrs = append(attrs, slog.String("error", o.res.Error))
	}
	log.LogAttrs(ctx, level, "stage", attrs...)
}
