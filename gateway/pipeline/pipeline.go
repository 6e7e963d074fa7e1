// Package pipeline runs the configured filter stages for each phase of an
// SMTP transaction and merges what they found into one Decision.
//
// For every stage that declared the phase it enforces a per-call timeout,
// recovers a panic, applies the stage's on_error when the stage breaks,
// applies the stage's edits, and records the stage's latency, verdict and
// errors as metrics and one log line. Stages that do not edit run
// concurrently, so a message waits for the slowest check rather than the sum
// of all; editing stages run alone, in config order, each seeing the edits
// of the ones before it.
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
package pipeline

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// DefaultTimeout bounds a stage call when its StageSpec gives no timeout, so
// that no stage can hold a client forever.
const DefaultTimeout = 10 * time.Second

// OnError is what the pipeline does when a stage breaks: returns an error,
// times out, panics or returns something invalid.
type OnError uint8

const (
	OnErrorTempFail   OnError = iota // 451: the sender retries later (the default)
	OnErrorAccept                    // accept as if the stage had returned Accept
	OnErrorReject                    // 550: refuse
	OnErrorQuarantine                // keep the message in the quarantine
	OnErrorSkip                      // ignore the stage for this call
)

var onErrorNames = [...]string{"tempfail", "accept", "reject", "quarantine", "skip"}

func (o OnError) String() string {
	if int(o) < len(onErrorNames) {
		return onErrorNames[o]
	}
	return fmt.Sprintf("on_error(%d)", o)
}

// ParseOnError parses an on_error value from the config; "" is the default,
// tempfail.
func ParseOnError(s string) (OnError, error) {
	if s == "" {
		return OnErrorTempFail, nil
	}
	for i, n := range onErrorNames {
		if s == n {
			return OnError(i), nil
		}
	}
	return 0, fmt.Errorf("unexpected %q; expect tempfail, accept, reject, quarantine or skip", s)
}

// StageSpec is one stage of the chain as configured.
type StageSpec struct {
	Stage   stages.Stage
	OnError OnError
	Timeout time.Duration // per call; 0 means DefaultTimeout
}

// Options are the pipeline's optional collaborators.
type Options struct {
	// Logger is used when Run is given no logger; nil discards.
	Logger *slog.Logger
	// Registerer receives the per-stage metrics; nil records none. A
	// pipeline rebuilt on reload may be given the same Registerer: it
	// continues the series already registered there.
	Registerer prometheus.Registerer
}

// Pipeline is a configured chain of stages. It is safe for concurrent use;
// the per-transaction state lives in a Session.
type Pipeline struct {
	stages []stage
	pol    policy.Policy
	log    *slog.Logger
	m      *metrics
}

// stage is a StageSpec with what the pipeline needs of it at every call.
type stage struct {
	stages.Stage
	name    string
	info    stages.Info // asked once: for a plugin it is a round trip
	onError OnError
	timeout time.Duration
	// timeoutErr is the cause of a per-call timeout; it wraps
	// context.DeadlineExceeded so that timeouts are told apart.
	timeoutErr error
}

// New builds a pipeline from the stages in chain order.
func New(specs []StageSpec, pol policy.Policy, opts Options) (*Pipeline, error) {
	if err := checkText(pol.SubjectTag); err != nil {
		return nil, fmt.Errorf("subject_tag: %w", err)
	}
	p := &Pipeline{pol: pol, log: opts.Logger}
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
		if int(sp.OnError) >= len(onErrorNames) {
			return nil, fmt.Errorf("stage %q: invalid on_error %d", name, sp.OnError)
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
			timeoutErr: fmt.Errorf("timed out after %s: %w", timeout, context.DeadlineExceeded),
		})
	}
	m, err := newMetrics(opts.Registerer)
	if err != nil {
		return nil, err
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
	Stage        string        // the stage that decided; "" for a score threshold or nobody
	Reason       string        // detail for the log, never for the client
	Trace        []StageResult // every stage that ran in this phase, in chain order
	BodyReplaced bool          // a stage replaced tx.Body with a stages.BytesBody
}

// StageResult is what one stage did in one phase.
type StageResult struct {
	Name     string
	Kind     string
	Phase    stages.Phase
	Action   stages.Action // after on_error
	Score    float64
	Result   string
	Reason   string
	Duration time.Duration
	Err      string // why the stage broke; "" if it did not
	OnError  bool   // the stage broke and its on_error gave Action
	TimedOut bool   // it broke by running out of time
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
	p       *Pipeline
	score   float64
	results []stages.Result
	flag    verdict  // strongest Tag or Quarantine so far
	accept  *verdict // an Accept that holds for the rest of the session
}

// Begin starts the state of one SMTP session.
func (p *Pipeline) Begin() *Session { return &Session{p: p} }

// Fork returns an independent copy of the state so far.
func (s *Session) Fork() *Session {
	c := *s
	c.results = slices.Clone(s.results)
	return &c
}

// Run runs the stages that declared ph, applies their edits to tx and
// returns the decision. ctx bounds the whole phase (the per-message
// deadline); each call is further bounded by its stage's timeout. log is the
// per-message logger; nil uses Options.Logger.
//
// When the data phase ends in Tag, the policy's subject_tag is applied to
// tx, so what is relayed (and what a dry run shows) carries it.
func (s *Session) Run(ctx context.Context, ph stages.Phase, tx *stages.Transaction, log *slog.Logger) Decision {
	if log == nil {
		log = s.p.log
	}
	if s.accept != nil {
		return Decision{Action: stages.Accept, Score: s.score, Stage: s.accept.stage, Reason: s.accept.reason}
	}
	outs := s.p.runChain(ctx, ph, tx, s.results, log)

	phaseScore := 0.0
	d := Decision{Trace: make([]StageResult, len(outs))}
	for i, o := range outs {
		phaseScore += o.res.Score
		d.Trace[i] = o.res
		d.BodyReplaced = d.BodyReplaced || o.bodyReplaced
	}
	d.Score = s.score + phaseScore
	decided, best := merge(s.flag, outs, d.Score, s.p.pol)
	d.Action, d.Stage, d.Reason = decided.action, decided.stage, decided.reason
	d.Reply = replyFor(decided, log)

	if d.Action == stages.Reject || d.Action == stages.TempFail {
		return d
	}
	s.score += phaseScore
	for _, o := range outs {
		s.results = append(s.results, o.result())
	}
	if best.action > s.flag.action {
		s.flag = best
	}
	if d.Action == stages.Accept && ph != stages.Rcpt {
		s.accept = &decided
	}
	if ph == stages.Data && d.Action == stages.Tag && s.p.pol.SubjectTag != "" {
		if err := ApplyEdits(tx, []stages.Edit{{Op: stages.SubjectTag, Value: s.p.pol.SubjectTag}}); err != nil {
			log.Error("subject tag", "error", err)
		}
	}
	return d
}

// outcome is one stage call as the pipeline saw it.
type outcome struct {
	res          StageResult
	reply        *stages.Reply
	bodyReplaced bool
}

func (o outcome) result() stages.Result {
	return stages.Result{Stage: o.res.Name, Kind: o.res.Kind, Action: o.res.Action, Score: o.res.Score,
		Result: o.res.Result, Reason: o.res.Reason, Errored: o.res.OnError}
}

// runChain runs the stages of phase ph in groups (see groupLen) and returns
// their outcomes in chain order, up to and including the first Accept.
func (p *Pipeline) runChain(ctx context.Context, ph stages.Phase, tx *stages.Transaction, prior []stages.Result, log *slog.Logger) []outcome {
	var run []*stage
	for i := range p.stages {
		if p.stages[i].info.Phases.Has(ph) {
			run = append(run, &p.stages[i])
		}
	}
	// prior grows below; a clone keeps the session's own slice untouched
	// until the phase is committed.
	prior = slices.Clone(prior)
	var outs []outcome
	for len(run) > 0 {
		n := groupLen(run)
		got := p.runGroup(ctx, ph, tx, run[:n], prior, log)
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
func (p *Pipeline) runGroup(ctx context.Context, ph stages.Phase, tx *stages.Transaction, group []*stage, prior []stages.Result, log *slog.Logger) []outcome {
	if len(group) == 1 {
		sg := group[0]
		o, edits := p.runOne(ctx, ph, sg, tx, prior, log)
		if len(edits) > 0 {
			if err := ApplyEdits(tx, edits); err != nil {
				return []outcome{p.failed(sg, o, err)}
			}
			o.bodyReplaced = slices.ContainsFunc(edits, func(e stages.Edit) bool { return e.Op == stages.BodyReplace })
		}
		return []outcome{o}
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
			outs[i], _ = p.runOne(cctx, ph, sg, tx, prior, log)
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

// runOne calls one stage and returns its outcome, with on_error applied if
// it broke, and the edits it asked for.
func (p *Pipeline) runOne(ctx context.Context, ph stages.Phase, sg *stage, tx *stages.Transaction, prior []stages.Result, log *slog.Logger) (outcome, []stages.Edit) {
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
	o := outcome{res: StageResult{Name: sg.name, Kind: sg.info.Kind, Phase: ph, Duration: time.Since(start)}}
	if err == nil {
		err = checkVerdict(ph, sg, v)
	}
	if err != nil {
		return p.failed(sg, o, err), nil
	}
	o.res.Action, o.res.Score, o.res.Result, o.res.Reason = v.Action, v.Score, v.Result, v.Reason
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

// call runs the stage with its timeout. The stage runs in its own goroutine
// so that one ignoring its context cannot hold the message past the
// timeout, and so that a panic is recovered and reported as an error.
func (p *Pipeline) call(ctx context.Context, ph stages.Phase, sg *stage, tx *stages.Transaction, log *slog.Logger) (stages.Verdict, error) {
	ctx, cancel := context.WithTimeoutCause(ctx, sg.timeout, sg.timeoutErr)
	defer cancel()
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
	o.res.Err = err.Error()
	o.res.OnError = true
	o.res.TimedOut = errors.Is(err, context.DeadlineExceeded)
	o.res.Score, o.res.Result, o.res.Reason = 0, "", "on_error "+sg.onError.String()
	o.reply = nil
	switch sg.onError {
	case OnErrorTempFail:
		o.res.Action = stages.TempFail
		o.reply = &errorReply
	case OnErrorAccept:
		o.res.Action = stages.Accept
	case OnErrorReject:
		o.res.Action = stages.Reject
	case OnErrorQuarantine:
		o.res.Action = stages.Quarantine
	case OnErrorSkip:
		o.res.Action = stages.Continue
	}
	return o
}

// record counts and logs one stage call: one line per stage per message, at
// Info for the data phase (what an operator asks about) and Debug before.
func (p *Pipeline) record(ctx context.Context, ph stages.Phase, sg *stage, o outcome, log *slog.Logger) {
	p.m.observe(sg, ph, o.res)
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
		slog.Duration("duration", o.res.Duration),
	}
	if o.res.Err != "" {
		attrs = append(attrs, slog.String("error", o.res.Err))
	}
	log.LogAttrs(ctx, level, "stage", attrs...)
}
