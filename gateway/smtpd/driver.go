package smtpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/door"
	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/recstore"
	"github.com/mailgate/mailgate/state/trace"
)

// RouteMatcher says whether mail for a domain may be accepted from an
// untrusted client: a route names it. A catch-all route for outbound mail
// does not count.
type RouteMatcher interface {
	HasRoute(domain string) bool
	// VerifyRcpt asks the next hop of addr's route whether it takes addr
	// (verify_rcpts). It returns nil when it does, when the route does not
	// verify recipients, or when it could not tell and the route takes
	// such recipients anyway; a 5xx *smtp.SMTPError when it refused addr
	// for good; any other error, the reason for the log, when it could not
	// tell (a 4xx, no answer).
	VerifyRcpt(ctx context.Context, addr string) error
}

// Queuer takes a committed message for delivery.
type Queuer interface {
	Enqueue(env *spool.Envelope)
	// Err is not nil once delivery has stopped for good: mail taken then
	// would sit in the spool with nobody to deliver it.
	Err() error
}

// Quarantiner keeps a message policy held back. Add takes the file of a
// spooled message that is not committed and returns once the message and
// its record are on stable storage; the caller then drops the spool file.
type Quarantiner interface {
	Add(ctx context.Context, rec *quarantine.Record, msgPath string) error
}

// Options is everything a Server, and its Driver, need.
type Options struct {
	Config     *policy.Config // as policy validated it
	Spool      *spool.Spool
	Routes     RouteMatcher
	Queue      Queuer
	Quarantine Quarantiner
	// Pipeline runs the stages; nil runs none.
	Pipeline *pipeline.Pipeline
	Logger   *slog.Logger
	// Metrics counts sessions, replies and policy actions; nil counts
	// them unregistered.
	Metrics *Metrics
	// Trace, when set, records each transaction's story.
	Trace *trace.Log
	// RateLimits is where the [[ratelimit]] rules keep their state, kept
	// across reloads; its zero value keeps it in the driver.
	RateLimits ratelimit.Env
	// Clock is the pre-greet cache's clock; nil is time.Now.
	Clock func() time.Time
	// Pregreet is where the pre-greet cache is kept; nil: under
	// data_dir/pregreet.
	Pregreet recstore.Store
}

// Driver runs mail transactions under one configuration (see the package
// comment). It is safe for concurrent use; a Conn and its Txns are not.
type Driver struct {
	opts   Options
	limits *ratelimit.Rules
	// bufs holds *dataBuffers between messages: a message takes a set
	// for its DATA and gives it back, and idle sets are the GC's to free.
	bufs sync.Pool
}

// NewDriver builds a driver; opts.Pipeline nil runs no stages.
func NewDriver(opts Options) (*Driver, error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics(nil)
	}
	if opts.Quarantine == nil {
		return nil, errors.New("smtpd: no quarantine")
	}
	if opts.Pipeline == nil {
		var err error
		if opts.Pipeline, err = pipeline.New(nil, opts.Config.Policy, pipeline.Options{}); err != nil {
			return nil, err
		}
	}
	return &Driver{opts: opts, limits: ratelimit.New(opts.Config.RateLimits, opts.RateLimits)}, nil
}

// trusts says whether a is in trusted_networks.
func (d *Driver) trusts(a netip.Addr) bool {
	return slices.ContainsFunc(d.opts.Config.Server.Trusted(), func(p netip.Prefix) bool { return p.Contains(a) })
}

// Watch gives the context a phase's checks run under while the client
// waits, and stop, called when they are done, before the client is read
// again. The SMTP session's ends when the client hangs up
// (door.WhileConnected): the checks stop, and nothing is queued.
type Watch func() (ctx context.Context, stop func())

// Conn is a client connection: who the client is, and the verdicts of the
// connect and helo phases, which count in each of its transactions.
type Conn struct {
	d      *Driver
	client stages.Client
	start  time.Time
	log    *slog.Logger
	watch  Watch
	base   *pipeline.Session // forked for each transaction
	// early is a refusal at connect or helo, answered at RCPT.
	early      *pipeline.Decision
	earlyPhase stages.Phase
	stages     []trace.Stage // the connect and helo results
}

// Connect runs the connect and helo phases for client; the driver sets
// client.Trusted from trusted_networks. A refusal is kept to be answered
// at RCPT (as Postfix's smtpd_delay_reject), so that it is logged with
// the envelope.
func (d *Driver) Connect(client stages.Client, watch Watch) *Conn {
	client.Trusted = d.trusts(client.Addr)
	c := &Conn{d: d, client: client, start: time.Now(), watch: watch, base: d.opts.Pipeline.Begin(),
		log: d.opts.Logger.With("client", client.Addr.String(), "helo", client.Helo)}
	tx := &stages.Transaction{Client: client}
	ctx, done := c.checks()
	defer done()
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo} {
		dec := c.base.Run(ctx, ph, tx, c.log)
		c.stages = append(c.stages, dec.Trace...)
		if refused(dec) {
			c.early, c.earlyPhase = &dec, ph
			break
		}
	}
	return c
}

// Stages are the results of the connect and helo phases.
func (c *Conn) Stages() []trace.Stage { return c.stages }

// checks returns the context a phase's checks run under: the client's
// watch, bounded by filter_timeout. done ends both; the context's cause
// then says whether the client hung up (door.ErrClientGone) or time ran out
// (context.DeadlineExceeded) first.
func (c *Conn) checks() (ctx context.Context, done func()) {
	base, stop := c.watch()
	ctx, cancel := context.WithTimeout(base, time.Duration(c.d.opts.Config.Server.FilterTimeout))
	return ctx, func() { stop(); cancel() }
}

func refused(d pipeline.Decision) bool {
	return d.Action == stages.Reject || d.Action == stages.TempFail
}

// Outcome is how the driver answered a command.
type Outcome struct {
	// Reply is what the client is told; nil when MAIL or RCPT is taken.
	Reply *smtp.SMTPError
	Phase stages.Phase // where it was decided
	// Event is what the trace records: reply text, action ("aborted":
	// the client went away), score, stage, reason, this command's stages.
	Event trace.Event
}

// Txn is one mail transaction, from MAIL FROM to its end. A Txn is used by
// one goroutine at a time, except Abandon.
type Txn struct {
	c    *Conn
	ftx  *pipeline.Session
	tx   *stages.Transaction
	w    *spool.Writer // nil once committed or aborted
	utf8 bool
	log  *slog.Logger
	// stages are the stage results so far, connect and helo included.
	stages    []trace.Stage
	early     *pipeline.Decision // a refusal at MAIL, answered at RCPT
	abandoned atomic.Bool
}

// Mail starts a transaction for sender from (MAIL FROM), utf8 saying
// whether the client asked for SMTPUTF8. Its queue ID is fixed here, so
// that every later line about it, a refusal at RCPT included, carries the
// ID. A refused sender gets no transaction.
func (c *Conn) Mail(from string, utf8 bool) (*Txn, Outcome) {
	if from != "" { // "" is the null sender
		canon, r, why := envelopeAddress(from, c.client.Trusted, utf8, errBadSender)
		if r != nil {
			return nil, c.answer(nil, c.log.With("from", from), Outcome{Reply: r, Phase: stages.Mail,
				Event: trace.Event{Action: "reject", Reason: why}}, nil, nil)
		}
		from = canon
	}
	// The rate limits count a message here, before anything costly. A
	// client refused at connect or helo gets that refusal at RCPT, not
	// a 450 that would turn it temporary.
	if c.early == nil {
		ctx, done := c.checks()
		x := c.d.limits.Check(ctx, ratelimit.Event{Client: c.client, From: from})
		done()
		if x != nil {
			return nil, c.answer(nil, c.log.With("from", from), Outcome{Reply: rateLimited(x), Phase: stages.Mail,
				Event: trace.Event{Action: "tempfail", Reason: x.Reason}}, nil, nil)
		}
	}
	w, err := c.d.opts.Spool.Create()
	if err != nil {
		return nil, c.answer(nil, c.log.With("from", from), Outcome{Reply: spoolReply(err), Phase: stages.Mail,
			Event: trace.Event{Action: "tempfail", Reason: "spool create failed"}}, nil, err)
	}
	t := &Txn{
		c:      c,
		w:      w,
		utf8:   utf8,
		tx:     &stages.Transaction{QueueID: w.ID(), Client: c.client, From: from},
		log:    c.log.With("queue_id", w.ID(), "from", from),
		ftx:    c.base.Fork(),
		stages: slices.Clone(c.stages),
	}
	t.record(trace.Event{Time: c.start, Event: "connect", Client: c.client.Addr.String(), Helo: c.client.Helo,
		TLS: c.client.TLS, Stages: c.stages})
	var mailStages []trace.Stage
	if c.early == nil {
		ctx, done := c.checks()
		d := t.ftx.Run(ctx, stages.Mail, t.tx, t.log)
		done()
		mailStages = d.Trace
		t.stages = append(t.stages, mailStages...)
		if refused(d) {
			t.early = &d
		}
	}
	t.record(trace.Event{Event: "mail", From: &from, Stages: mailStages})
	c.d.opts.Metrics.reply(250)
	return t, Outcome{Phase: stages.Mail}
}

// Transaction is the transaction as the stages see it: after Data, the
// header and recipients as they were queued.
func (t *Txn) Transaction() *stages.Transaction { return t.tx }

// Stages are the stage results of the connection and the transaction so
// far; a refused recipient's are in its Outcome only.
func (t *Txn) Stages() []trace.Stage { return t.stages }

// record adds an event to the trace of t.
func (t *Txn) record(e trace.Event) {
	e.QueueID = t.tx.QueueID
	t.c.d.opts.Trace.Record(e)
}

// verifyTimeout bounds one recipient verification (verify_rcpts) at RCPT.
const verifyTimeout = 5 * time.Second

// Rcpt adds recipient to (RCPT TO) after a refusal kept from an earlier
// phase, max_recipients, the address checks, relay control, the rate
// limits, verify_rcpts and the rcpt phase; a refused one is left out of
// the transaction.
func (t *Txn) Rcpt(to string) Outcome {
	c, cfg := t.c, &t.c.d.opts.Config.Server
	log := t.log.With("rcpt", to)
	refuse := func(r *smtp.SMTPError, ph stages.Phase, e trace.Event, act *stages.Action) Outcome {
		e.Event, e.Rcpts = "rcpt", []string{to}
		return c.answer(t, log, Outcome{Reply: r, Phase: ph, Event: e}, act, nil)
	}
	// go-smtp refuses the recipient over the limit before the session
	// sees it, and announces the limit (LIMITS RCPTMAX, RFC 9422); this is
	// the same rule, with go-smtp's reply (RFC 5321 §4.5.3.1.10), for a
	// dry run, which has no go-smtp in front.
	if n := cfg.MaxRecipients; n > 0 && len(t.tx.Rcpts) >= n {
		r := reply(452, 4, 5, 3, fmt.Sprintf("Maximum limit of %v recipients reached", n))
		return refuse(r, stages.Rcpt, trace.Event{Action: "tempfail", Reason: "max_recipients reached"}, nil)
	}
	early, phase := c.early, c.earlyPhase
	if t.early != nil {
		early, phase = t.early, stages.Mail
	}
	if early != nil {
		return refuse(replyFor(*early), phase, trace.Event{Action: early.Action.String(), Stage: early.Stage,
			Reason: phase.String() + ": " + early.Reason, Score: early.Score}, &early.Action)
	}
	canon, r, why := envelopeAddress(to, c.client.Trusted, t.utf8, errBadRcpt)
	if r != nil {
		return refuse(r, stages.Rcpt, trace.Event{Action: "reject", Reason: why}, nil)
	}
	// From here on the recipient is in the one form relay control,
	// policy, routes, the relayed envelope and traces all compare.
	to, log = canon, t.log.With("rcpt", canon)
	_, domain, _ := address.Split(to)
	// An open relay is the worst bug a gateway can have: mail is taken only
	// for domains we route, unless the client is trusted.
	if !c.client.Trusted && !c.d.opts.Routes.HasRoute(domain) {
		return refuse(errRelayDenied, stages.Rcpt, trace.Event{Action: "reject", Reason: "relay denied: no route for " + domain}, nil)
	}
	base, stop := c.watch()
	defer stop()
	if x := c.d.limits.Check(base, ratelimit.Event{Client: c.client, From: t.tx.From, Rcpt: to}); x != nil {
		return refuse(rateLimited(x), stages.Rcpt, trace.Event{Action: "tempfail", Reason: x.Reason}, nil)
	}
	// A recipient the internal server refuses would bounce later, to a
	// sender that may be forged: refuse it now (verify_rcpts), and one it
	// could not verify, try later (450 4.1.1, as Postfix's
	// unverified_recipient_tempfail_action), unless the route fails open.
	// The probe has a short deadline of its own, so a hung internal server
	// costs the client seconds, not the whole filter_timeout, and leaves
	// the rcpt-phase stages their full time.
	filterTimeout := time.Duration(cfg.FilterTimeout)
	vctx, vcancel := context.WithTimeout(base, min(verifyTimeout, filterTimeout/2))
	verr := c.d.opts.Routes.VerifyRcpt(vctx, to)
	vcancel()
	var refusal *smtp.SMTPError
	switch {
	case verr == nil:
	case errors.As(verr, &refusal) && refusal.Code/100 == 5:
		return refuse(errUnknownRcpt, stages.Rcpt, trace.Event{Action: "reject", Reason: "recipient refused by the next hop: " + verr.Error()}, nil)
	default:
		return refuse(errUnverified, stages.Rcpt, trace.Event{Action: "tempfail", Reason: "recipient not verified: " + verr.Error()}, nil)
	}
	ctx, cancel := context.WithTimeout(base, filterTimeout)
	defer cancel()
	t.tx.Rcpts = append(t.tx.Rcpts, to)
	d := t.ftx.Run(ctx, stages.Rcpt, t.tx, log)
	ts := d.Trace
	if refused(d) {
		// A TempFail here may be the pipeline's 452 4.5.3 for a recipient
		// under another policy than those accepted before: the client
		// sends it again in a transaction of its own (RFC 5321
		// §4.5.3.1.10), so one message never mixes policies.
		t.tx.Rcpts = t.tx.Rcpts[:len(t.tx.Rcpts)-1]
		return refuse(replyFor(d), stages.Rcpt, trace.Event{Action: d.Action.String(), Stage: d.Stage,
			Reason: d.Reason, Score: d.Score, Policy: d.Policy, Stages: ts}, &d.Action)
	}
	t.stages = append(t.stages, ts...)
	ev := trace.Event{Event: "rcpt", Rcpts: []string{to}, Action: d.Action.String(), Score: d.Score, Policy: d.Policy, Stages: ts}
	t.record(ev)
	c.d.opts.Metrics.reply(250)
	return Outcome{Phase: stages.Rcpt, Event: ev}
}

// Data takes the message from r (dot-unstuffed DATA or BDAT) and ends the
// transaction, whatever the outcome. The message is streamed into the
// spool behind our Received field, line ends made CRLF (bare_lf), checked
// against max_message_size, max_hops and the header size; the data-phase
// stages run while the client waits, and the decision is answered once
// the message is durable: committed and queued, or quarantined.
func (t *Txn) Data(r io.Reader) Outcome {
	w, cfg := t.w, &t.c.d.opts.Config.Server
	log := t.log.With("rcpts", t.tx.Rcpts)
	ev := trace.Event{Event: "data"}
	// refuse ends the transaction with reply rep for what the message is.
	refuse := func(rep *smtp.SMTPError, reason string) Outcome {
		ev.Action, ev.Reason, ev.Size = actionOf(rep), reason, w.Size()
		return t.end(log, Outcome{Reply: rep, Phase: stages.Data, Event: ev}, nil, nil)
	}
	failed := func(op string, err error) Outcome {
		ev.Action, ev.Reason = "tempfail", op+" failed: "+err.Error()
		return t.end(log, Outcome{Reply: spoolReply(err), Phase: stages.Data, Event: ev}, nil, err)
	}
	aborted := func(reason string) Outcome {
		ev.Action, ev.Reason = "aborted", reason
		return t.end(log, Outcome{Reply: errLocal, Phase: stages.Data, Event: ev}, nil, nil)
	}

	bufs, _ := t.c.d.bufs.Get().(*dataBuffers)
	if bufs == nil {
		bufs = newDataBuffers()
	}
	defer func() {
		bufs.lineEnd.Reset(nil) // let go of this message's reader
		t.c.d.bufs.Put(bufs)
	}()
	in := &countingReader{r: r}
	msg := io.MultiReader(strings.NewReader(t.receivedField()), bufs.lineEndReader(in, cfg.BareLF == "reject"))
	// Through our buffer: the MultiReader's own WriteTo allocates one.
	if _, err := io.CopyBuffer(spoolWriter{w}, struct{ io.Reader }{msg}, bufs.copy); err != nil {
		// Write errors are the spool's; read errors the client's.
		if errors.As(err, new(spoolWriteError)) {
			return failed("spool write", err)
		}
		rep, reason := readError(err)
		if rep == nil {
			return aborted(reason)
		}
		return refuse(rep, reason)
	}
	// go-smtp's reader stops at max_message_size on the wire, with this
	// reply; this is the same rule for a dry run.
	if cfg.MaxMessageSize > 0 && in.n > int64(cfg.MaxMessageSize) {
		return refuse(smtp.ErrDataTooLarge, smtp.ErrDataTooLarge.Error())
	}
	if err := readMessage(t.tx, w, bufs.header); errors.Is(err, errHeaderTooLarge) {
		return refuse(errBigHeader, err.Error())
	} else if err != nil {
		return failed("spool read back", err)
	}
	// RFC 5321 §6.3: a message that passed too many hops is in a loop.
	// The client's Received fields count, not the one this hop added.
	if hops := len(t.tx.Header.Values("Received")) - 1; hops > cfg.MaxHops {
		return refuse(errTooManyHops, fmt.Sprintf("mail loop: %d Received fields", hops))
	}

	// The client waits for the checks; one that hangs up meanwhile gets
	// no reply, so they stop, and nothing is queued: it was told nothing
	// and will send the message again.
	ctx, done := t.c.checks()
	origHeader := slices.Clone(t.tx.Header)
	d := t.ftx.Run(ctx, stages.Data, t.tx, log)
	done()
	ev.Stages = d.Trace
	t.stages = append(t.stages, ev.Stages...)
	if door.Gone(ctx) {
		return aborted("client went away during the checks")
	}
	ev.MessageID, ev.Size = t.tx.Header.Get("Message-Id"), w.Size()
	ev.Action, ev.Score, ev.Stage, ev.Reason, ev.Policy = d.Action.String(), d.Score, d.Stage, d.Reason, d.Policy
	decided := func(rep *smtp.SMTPError, act stages.Action, err error) Outcome {
		return t.end(log, Outcome{Reply: rep, Phase: stages.Data, Event: ev}, &act, err)
	}
	switch {
	case errors.Is(context.Cause(ctx), context.DeadlineExceeded) && d.Action != stages.Reject:
		ev.Action, ev.Reason = "tempfail", "filter_timeout reached"
		return decided(errFilterTime, stages.TempFail, nil)
	case refused(d):
		return decided(replyFor(d), d.Action, nil)
	case len(t.tx.Rcpts) == 0:
		// Every recipient was removed by a stage: nothing to deliver, and
		// the sender must not learn that from a bounce.
		ev.Action, ev.Reason = "discard", "no recipients left after filtering"
		return decided(reply(250, 2, 0, 0, "Ok"), d.Action, nil)
	}
	if !slices.Equal(origHeader, t.tx.Header) || d.BodyReplaced {
		if err := rewrite(t.tx, w); err != nil {
			return failed("spool rewrite", err)
		}
		ev.Size = w.Size()
	}
	if d.Action == stages.Quarantine {
		// Detached, as the commit below: once the data is in, keeping it is
		// cheaper than having the client send it all again.
		if err := t.quarantine(context.WithoutCancel(ctx), d, ev.MessageID); err != nil {
			return failed("quarantine", err)
		}
		return decided(queued(t.tx.QueueID), d.Action, nil)
	}
	env := spool.NewEnvelope(t.tx.From, t.tx.Rcpts, t.c.client.Addr.String(), t.c.client.Helo, ev.MessageID)
	if err := t.c.d.opts.Queue.Err(); err != nil {
		// 250 would promise a delivery that cannot happen; 451 keeps the
		// mail with the sender until the gateway is fixed.
		ev.Action, ev.Reason = "tempfail", "delivery stopped"
		return decided(errLocal, stages.TempFail, err)
	}
	if t.abandoned.Load() {
		// The client reset or left before the end: it was told nothing,
		// so nothing may be delivered.
		return aborted("client went away during DATA")
	}
	// Commit is not bound to the client: once the data is in, finishing the
	// commit is cheaper than asking the client to send it all again.
	err := w.Commit(context.Background(), env)
	t.w = nil // committed, or removed by the failed Commit
	if err != nil {
		return failed("spool commit", err)
	}
	t.c.d.opts.Queue.Enqueue(env)
	return decided(queued(env.ID), d.Action, nil)
}

// quarantine moves the message into the quarantine with its envelope,
// every verdict and the reason; the spool file is dropped by end.
func (t *Txn) quarantine(ctx context.Context, d pipeline.Decision, messageID string) error {
	w := t.w
	if err := w.Flush(); err != nil {
		return err
	}
	rec := &quarantine.Record{
		ID:         t.tx.QueueID,
		MessageID:  messageID,
		From:       t.tx.From,
		Rcpts:      slices.Clone(t.tx.Rcpts),
		ClientAddr: t.c.client.Addr.String(),
		ClientHelo: t.c.client.Helo,
		Size:       w.Size(),
		Score:      d.Score,
		Stage:      d.Stage,
		Reason:     d.Reason,
		Policy:     d.Policy,
		ByScore:    d.ByScore,
		Verdicts:   t.stages,
	}
	return t.c.d.opts.Quarantine.Add(ctx, rec, w.Path())
}

// Abandon marks a transaction the client left (RSET, a hang-up) while
// Data works on it, from another goroutine: Data ends it without queuing
// the message. The client was told nothing.
func (t *Txn) Abandon() { t.abandoned.Store(true) }

// Abort removes the spool file of t unless it was committed, so that a
// transaction that ends before its DATA, or is refused, leaves nothing
// half-queued. It must not run while Data does.
func (t *Txn) Abort() {
	if t.w == nil {
		return
	}
	if err := t.w.Abort(); err != nil {
		t.log.Warn("spool abort", "err", err)
	}
	t.w = nil
}

// end is how every transaction that got to DATA ends, whatever the
// outcome: the spool file goes unless it was committed, and the outcome
// is answered.
func (t *Txn) end(log *slog.Logger, o Outcome, act *stages.Action, err error) Outcome {
	t.Abort()
	return t.c.answer(t, log, o, act, err)
}

// decisionWords are the words decision lines start with, by action; any
// other action is "accepted" (README: Logs).
var decisionWords = map[string]string{"reject": "rejected", "tempfail": "deferred", "quarantine": "quarantined",
	"discard": "discarded", "aborted": "aborted"}

// answer reports a reply the driver gives, o saying why, in one place:
// the trace records it (when there is a transaction t), the reply is
// counted, and so is the action when the stages or policy decided (act),
// and the one decision line is logged, as an error with err when the
// gateway failed. A client that went away ("aborted") gets no reply, so
// none is counted or traced.
func (c *Conn) answer(t *Txn, log *slog.Logger, o Outcome, act *stages.Action, err error) Outcome {
	ev := &o.Event
	what, ok := decisionWords[ev.Action]
	if !ok {
		what = "accepted"
	}
	attrs := []any{"phase", o.Phase.String()}
	if what != "aborted" {
		ev.Reply = replyText(o.Reply)
		attrs = append(attrs, "code", o.Reply.Code, "reply", ev.Reply)
		c.d.opts.Metrics.reply(o.Reply.Code)
	}
	if act != nil {
		c.d.opts.Metrics.action(*act)
	}
	if t != nil {
		t.record(*ev)
	}
	add := func(ok bool, key string, val any) {
		if ok {
			attrs = append(attrs, key, val)
		}
	}
	add(what == "accepted", "action", ev.Action)
	add(ev.Stage != "", "stage", ev.Stage)
	add(ev.Reason != "", "reason", ev.Reason)
	add(act != nil, "score", ev.Score)
	add(ev.Policy != "", "policy", ev.Policy)
	add(ev.Size > 0, "size", ev.Size)
	add(ev.MessageID != "", "message_id", ev.MessageID)
	add(o.Phase == stages.Data, "delay", time.Since(c.start).Round(time.Millisecond))
	if err != nil {
		log.Error(what, append(attrs, "err", err)...)
	} else {
		log.Info(what, attrs...)
	}
	return o
}

// receivedField renders the trace field this hop adds (RFC 5321 §4.4), in
// the layout Postfix uses so that existing tooling parses it.
func (t *Txn) receivedField() string {
	var b strings.Builder
	cl := t.c.client
	helo := cl.Helo
	if helo == "" {
		helo = "unknown"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", clean(helo, " ()[]"), addrLiteral(cl.Addr))
	proto := "ESMTP"
	if t.utf8 {
		proto = "UTF8SMTP" // RFC 6531 §3.7.3
	}
	if cl.TLS != "" {
		fmt.Fprintf(&b, "\t(using %s)\r\n", cl.TLS)
		proto += "S" // RFC 3848
	}
	fmt.Fprintf(&b, "\tby %s (mailgate) with %s id %s", t.c.d.opts.Config.Hostname, proto, t.tx.QueueID)
	if len(t.tx.Rcpts) == 1 {
		// Only a single recipient is named: naming several would disclose
		// Bcc recipients to each other (RFC 5321 §7.2).
		fmt.Fprintf(&b, "\r\n\tfor <%s>", clean(t.tx.Rcpts[0], ""))
	}
	fmt.Fprintf(&b, "; %s\r\n", time.Now().Format("Mon, 02 Jan 2006 15:04:05 -0700 (MST)"))
	return b.String()
}

func addrLiteral(a netip.Addr) string {
	if a.Is6() && !a.Is4In6() {
		return "IPv6:" + a.String() // RFC 5321 §4.1.3
	}
	return a.String()
}

// clean keeps client-chosen text (a HELO name; an address Rcpt checked
// but a stage may have added) from breaking the header field it is put
// in: control characters and those in bad become "_".
func clean(s, bad string) string {
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f || strings.ContainsRune(bad, c) {
			return '_'
		}
		return c
	}, s)
}
