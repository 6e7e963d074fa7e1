package smtpd

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/gateway/trace"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// Replies. Texts are generic on purpose: they reach the sender, details go
// to the log. Codes follow RFC 5321 §4.2 and enhanced codes RFC 3463.
var (
	errRelayDenied  = reply(554, 5, 7, 1, "Relay access denied")
	errRejected     = reply(550, 5, 7, 1, "Message rejected")
	errRcptRejected = reply(550, 5, 7, 1, "Recipient rejected")
	errTempFail     = reply(451, 4, 7, 1, "Try again later")
	errRcptTempFail = reply(450, 4, 7, 1, "Try again later")
	errLocal        = reply(451, 4, 3, 0, "Local error in processing, try again later")
	errNoSpace      = reply(452, 4, 3, 1, "Insufficient system storage")
	errTooManyHops  = reply(554, 5, 4, 6, "Too many hops")
	errBareLF       = reply(550, 5, 5, 2, "Message contains bare CR or LF")
	errLineTooLong  = reply(500, 5, 5, 2, "Line too long")
	errDataTimeout  = reply(421, 4, 4, 2, "Timeout reading message, closing connection")
	errFilterTime   = reply(451, 4, 3, 2, "Message checks timed out, try again later")
	errBadRcpt      = reply(501, 5, 1, 3, "Bad recipient address syntax")
	errUnknownRcpt  = reply(550, 5, 1, 1, "Recipient address rejected")
	errUnverified   = reply(450, 4, 1, 1, "Recipient address not verified, try again later")
	errBigHeader    = reply(552, 5, 3, 4, "Message header too large")
	errBadSender    = reply(501, 5, 1, 7, "Bad sender address syntax")
	errNeedUTF8     = reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8")
)

func reply(code, a, b, c int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, c}, Message: text}
}

// toSMTP turns a stage's proposed reply into a go-smtp reply, keeping the
// class of the action: a stage cannot make a rejection look like success.
func toSMTP(r *stages.Reply, def *smtp.SMTPError) *smtp.SMTPError {
	if r == nil || r.Code/100 != def.Code/100 {
		return def
	}
	e := smtp.EnhancedCode(r.Enhanced)
	if r.Enhanced == [3]int{} || r.Enhanced[0] != r.Code/100 {
		e = def.EnhancedCode
	}
	text := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, r.Text)
	if text == "" {
		text = def.Message
	}
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: e, Message: text}
}

// verifyTimeout bounds one recipient verification (verify_rcpts) at RCPT.
const verifyTimeout = 5 * time.Second

// replyFor is the reply to a Reject or TempFail decision given at phase ph
// (rejections from connect, helo and mail are given at RCPT).
func replyFor(ph stages.Phase, d pipeline.Decision) *smtp.SMTPError {
	def := errRejected
	switch {
	case d.Action == stages.TempFail && ph == stages.Data:
		def = errTempFail
	case d.Action == stages.TempFail:
		def = errRcptTempFail
	case ph == stages.Rcpt:
		def = errRcptRejected
	}
	return toSMTP(d.Reply, def)
}

// Reply renders the reply a client gets for decision d at phase ph, as
// `mailgate test` shows it.
func Reply(ph stages.Phase, d pipeline.Decision) string {
	return replyText(replyFor(ph, d))
}

// RelayDenied is the reply to a recipient the gateway does not relay for.
func RelayDenied() string { return replyText(errRelayDenied) }

func replyText(r *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}

type session struct {
	srv    *Server
	gen    *generation // the config it runs under, from start to end
	conn   *smtp.Conn
	log    *slog.Logger
	client stages.Client
	start  time.Time

	base *pipeline.Session // connect and helo verdicts; forked for each transaction
	// early is a rejection from connect or helo, answered at RCPT.
	early      *pipeline.Decision
	earlyPhase stages.Phase
	// connStages are the connect and helo results, for each transaction's
	// trace and quarantine record.
	connStages []trace.Stage

	// go-smtp runs Data in a goroutine of its own for BDAT, and calls
	// Reset or Logout from the connection's goroutine while it runs (RSET
	// or a disconnect between chunks). mu orders them.
	mu      sync.Mutex
	cur     *txn // the transaction in progress
	running int  // Data calls that have not returned
	closed  bool // Logout was called; the last Data to end releases gen
}

// txn is one mail transaction, from MAIL FROM to its end. Data works on
// the txn it started with, never on whatever the session holds later.
type txn struct {
	ftx  *pipeline.Session
	tx   *stages.Transaction
	w    *spool.Writer // nil once committed or aborted
	utf8 bool
	log  *slog.Logger
	// stages are the stage results of the transaction so far, all
	// phases, connect and helo included.
	stages []trace.Stage
	// early is a rejection at MAIL, answered at RCPT.
	early *pipeline.Decision

	// Under session.mu.
	inData bool // Data works on it: only Data may end it
	reset  bool // Reset or Logout came while Data worked on it
}

func newSession(s *Server, c *smtp.Conn) *session {
	addr := remoteAddr(c.Conn())
	gen := s.acquire()
	sess := &session{
		srv:   s,
		gen:   gen,
		conn:  c,
		start: time.Now(),
		client: stages.Client{
			Addr:    addr,
			Helo:    c.Hostname(),
			Trusted: gen.isTrusted(addr),
		},
	}
	if ta, ok := c.Conn().RemoteAddr().(*net.TCPAddr); ok {
		sess.client.Port = uint16(ta.Port)
	}
	if st, ok := c.TLSConnectionState(); ok {
		sess.client.TLS = tlsDescription(st.Version, st.CipherSuite)
	}
	sess.log = s.log.With("client", addr.String(), "helo", sess.client.Helo)
	s.opts.Metrics.session()

	sess.base = gen.pipeline.Begin()
	tx := &stages.Transaction{Client: sess.client}
	conn, stop := whileConnected(c.Conn())
	defer stop()
	ctx, cancel := context.WithTimeout(conn, time.Duration(gen.cfg.Server.FilterTimeout))
	defer cancel()
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo} {
		d := sess.base.Run(ctx, ph, tx, sess.log)
		sess.connStages = append(sess.connStages, d.Records()...)
		if d.Action == stages.Reject || d.Action == stages.TempFail {
			sess.early, sess.earlyPhase = &d, ph
			break
		}
	}
	return sess
}

// record adds an event to the trace of transaction t.
func (s *session) record(t *txn, e trace.Event) {
	e.QueueID = t.tx.QueueID
	s.srv.opts.Trace.Record(e)
}

// current returns the transaction in progress, or nil.
func (s *session) current() *txn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

// Mail implements smtp.Session: MAIL FROM starts a transaction. Its queue ID
// is fixed here so that every later line about it, a rejection at RCPT
// included, carries the ID.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.drop()
	if !opts.UTF8 && !isASCII(from) {
		return s.fail(errNeedUTF8, "mail", "non-ASCII sender without SMTPUTF8", "from", from)
	}
	if from != "" {
		canon, why := envelopeAddress(from, s.client.Trusted)
		if why != "" {
			return s.fail(errBadSender, "mail", why, "from", from)
		}
		from = canon
	}
	w, err := s.srv.opts.Spool.Create()
	if err != nil {
		log := s.log.With("from", from)
		log.Error("spool create failed", "err", err)
		return s.count(spoolReply(err))
	}
	t := &txn{
		w:      w,
		utf8:   opts.UTF8,
		tx:     &stages.Transaction{QueueID: w.ID(), Client: s.client, From: from},
		log:    s.log.With("queue_id", w.ID(), "from", from),
		ftx:    s.base.Fork(),
		stages: slices.Clone(s.connStages),
	}
	s.mu.Lock()
	closed := s.closed
	if !closed {
		s.cur = t
	}
	s.mu.Unlock()
	if closed {
		// The connection went away under us.
		t.abort()
		return errLocal
	}
	s.record(t, trace.Event{Time: s.start, Event: "connect", Client: s.client.Addr.String(), Helo: s.client.Helo,
		TLS: s.client.TLS, Stages: s.connStages})
	var mailStages []trace.Stage
	if s.early == nil {
		conn, stop := whileConnected(s.conn.Conn())
		defer stop()
		ctx, cancel := context.WithTimeout(conn, time.Duration(s.gen.cfg.Server.FilterTimeout))
		defer cancel()
		d := t.ftx.Run(ctx, stages.Mail, t.tx, t.log)
		mailStages = d.Records()
		t.stages = append(t.stages, mailStages...)
		if d.Action == stages.Reject || d.Action == stages.TempFail {
			t.early = &d
		}
	}
	s.record(t, trace.Event{Event: "mail", From: &from, Stages: mailStages})
	s.srv.opts.Metrics.reply(250)
	return nil
}

// Rcpt implements smtp.Session: relay control, then the rcpt phase.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	t := s.current()
	if t == nil {
		return s.fail(errLocal, "rcpt", "no transaction")
	}
	log := t.log.With("rcpt", to)
	refuse := func(r *smtp.SMTPError, e trace.Event) error {
		e.Event, e.Rcpts, e.Reply = "rcpt", []string{to}, replyText(r)
		s.record(t, e)
		return s.count(r)
	}
	early, phase := s.early, s.earlyPhase
	if t.early != nil {
		early, phase = t.early, stages.Mail
	}
	if early != nil {
		r := replyFor(stages.Rcpt, *early)
		s.logDecision(log, "rejected", r, "phase", phase.String(), "stage", early.Stage, "reason", early.Reason)
		s.srv.opts.Metrics.action(early.Action)
		return refuse(r, trace.Event{Action: early.Action.String(), Stage: early.Stage,
			Reason: phase.String() + ": " + early.Reason, Score: early.Score})
	}
	if !t.utf8 && !isASCII(to) {
		s.failLog(log, errNeedUTF8, "rcpt", "non-ASCII recipient without SMTPUTF8")
		return refuse(errNeedUTF8, trace.Event{Action: "reject", Reason: "non-ASCII recipient without SMTPUTF8"})
	}
	canon, why := envelopeAddress(to, s.client.Trusted)
	if why != "" {
		s.failLog(log, errBadRcpt, "rcpt", why)
		return refuse(errBadRcpt, trace.Event{Action: "reject", Reason: why})
	}
	// From here on the recipient is in the one form relay control,
	// policy, routes, the relayed envelope and traces all compare.
	to, log = canon, t.log.With("rcpt", canon)
	_, domain, _ := address.Split(to)
	// An open relay is the worst bug a gateway can have: mail is taken only
	// for domains we route, unless the client is trusted.
	if !s.client.Trusted && !s.gen.routes.HasRoute(domain) {
		reason := "relay denied: no route for " + domain
		s.logDecision(log, "rejected", errRelayDenied, "phase", "rcpt", "reason", reason)
		return refuse(errRelayDenied, trace.Event{Action: "reject", Reason: reason})
	}
	// A recipient the internal server refuses would bounce later, to a
	// sender that may be forged: refuse it now (verify_rcpts), and one it
	// could not verify, try later (450 4.1.1, as Postfix's
	// unverified_recipient_tempfail_action), unless the route fails open.
	// The probe has a short deadline of its own, so a hung internal server
	// costs the client seconds, not the whole filter_timeout, and leaves
	// the rcpt-phase stages their full time.
	conn, stop := whileConnected(s.conn.Conn())
	defer stop()
	filterTimeout := time.Duration(s.gen.cfg.Server.FilterTimeout)
	vctx, vcancel := context.WithTimeout(conn, min(verifyTimeout, filterTimeout/2))
	verr := s.gen.routes.VerifyRcpt(vctx, to)
	vcancel()
	var refusal *smtp.SMTPError
	switch {
	case verr == nil:
	case errors.As(verr, &refusal) && refusal.Code/100 == 5:
		reason := "recipient refused by the next hop: " + verr.Error()
		s.logDecision(log, "rejected", errUnknownRcpt, "phase", "rcpt", "reason", reason)
		return refuse(errUnknownRcpt, trace.Event{Action: "reject", Reason: reason})
	default:
		reason := "recipient not verified: " + verr.Error()
		s.logDecision(log, "deferred", errUnverified, "phase", "rcpt", "reason", reason)
		return refuse(errUnverified, trace.Event{Action: "tempfail", Reason: reason})
	}
	ctx, cancel := context.WithTimeout(conn, filterTimeout)
	defer cancel()
	t.tx.Rcpts = append(t.tx.Rcpts, to)
	d := t.ftx.Run(ctx, stages.Rcpt, t.tx, log)
	ts := d.Records()
	switch d.Action {
	case stages.Reject, stages.TempFail:
		// A TempFail here may be the pipeline's 452 4.5.3 for a recipient
		// under another policy than those accepted before: the client
		// sends it again in a transaction of its own (RFC 5321
		// §4.5.3.1.10), so one message never mixes policies.
		t.tx.Rcpts = t.tx.Rcpts[:len(t.tx.Rcpts)-1]
		r := replyFor(stages.Rcpt, d)
		what := "rejected"
		if d.Action == stages.TempFail {
			what = "deferred"
		}
		s.logDecision(log, what, r, "phase", "rcpt", "stage", d.Stage, "reason", d.Reason, "policy", d.Policy)
		s.srv.opts.Metrics.action(d.Action)
		return refuse(r, trace.Event{Action: d.Action.String(), Stage: d.Stage, Reason: d.Reason, Score: d.Score, Policy: d.Policy, Stages: ts})
	}
	t.stages = append(t.stages, ts...)
	s.record(t, trace.Event{Event: "rcpt", Rcpts: []string{to}, Action: d.Action.String(), Score: d.Score, Policy: d.Policy, Stages: ts})
	s.srv.opts.Metrics.reply(250)
	return nil
}

// Data implements smtp.Session: stream the message into the spool, run the
// data-phase stages while the client waits, and answer 250 only after the
// message and its envelope are on disk.
func (s *session) Data(r io.Reader) error {
	s.mu.Lock()
	t := s.cur
	if t != nil {
		t.inData = true
		s.running++
	}
	s.mu.Unlock()
	if t == nil {
		return s.fail(errLocal, "data", "no transaction")
	}
	defer s.endData(t)
	return s.data(t, r)
}

// endData ends Data's work on t. A transaction reset meanwhile is ended
// here, by the goroutine that owns its writer; after a commit that does
// nothing.
func (s *session) endData(t *txn) {
	s.mu.Lock()
	t.inData = false
	reset := t.reset
	s.running--
	release := s.closed && s.running == 0
	s.mu.Unlock()
	if reset {
		t.abort()
	}
	if release {
		s.srv.release(s.gen)
	}
}

func (s *session) data(t *txn, r io.Reader) error {
	log := t.log.With("rcpts", t.tx.Rcpts)
	w := t.w
	cfg := &s.gen.cfg.Server
	// refuse ends the transaction with reply r and traces why.
	refuse := func(r *smtp.SMTPError, reason string) error {
		s.record(t, trace.Event{Event: "data", Action: actionOf(r), Reason: reason, Reply: replyText(r), Size: w.Size()})
		t.abort()
		return s.failLog(log, r, "data", reason)
	}

	// Reading: a slow but moving client is not cut off, a stalled one is
	// (data_timeout), and so is one that takes too long in all
	// (data_total_timeout, from the DATA or first BDAT command on).
	if lc := limited(s.conn.Conn()); lc != nil {
		lc.readingData(time.Duration(cfg.DataTimeout), time.Now().Add(time.Duration(cfg.DataTotalTimeout)))
		defer lc.readingData(0, time.Time{})
	}
	in := newLineEndReader(r, cfg.BareLF == "reject")
	hs := newHeaderScanner()
	received := s.receivedField(t)
	if _, err := io.WriteString(w, received); err != nil {
		return s.spoolError(t, log, err, "write")
	}
	_, err := io.Copy(spoolWriter{w}, io.TeeReader(in, hs))
	if err != nil {
		var se *smtp.SMTPError
		var ne net.Error
		switch {
		case errors.As(err, &se): // size limit from go-smtp's reader: 552 5.3.4
			return refuse(se, err.Error())
		case errors.Is(err, errBareLineEnd):
			return refuse(errBareLF, "bare CR or LF")
		case errors.Is(err, smtp.ErrTooLongLine):
			return refuse(errLineTooLong, "line longer than max_line_length")
		case errors.As(err, &ne) && ne.Timeout():
			// go-smtp writes the 421, then closes the connection.
			return refuse(errDataTimeout, "data timeout")
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, smtp.ErrDataReset):
			s.record(t, trace.Event{Event: "data", Action: "aborted", Reason: "client went away during DATA"})
			t.abort()
			log.Info("aborted", "reason", "client went away during DATA")
			return errLocal
		default:
			// Read errors other than the above are the client's; write
			// errors are the spool's.
			var sw spoolWriteError
			if errors.As(err, &sw) {
				return s.spoolError(t, log, err, "write")
			}
			s.record(t, trace.Event{Event: "data", Action: "aborted", Reason: err.Error()})
			t.abort()
			log.Info("aborted", "reason", err.Error())
			return errLocal
		}
	}
	if hs.received > cfg.MaxHops {
		return refuse(errTooManyHops, fmt.Sprintf("mail loop: %d Received fields", hs.received))
	}

	if err := readMessage(t.tx, w); errors.Is(err, errHeaderTooLarge) {
		return refuse(errBigHeader, err.Error())
	} else if err != nil {
		return s.spoolError(t, log, err, "read back")
	}
	// The client waits for the checks; one that hangs up meanwhile gets
	// no reply, so they stop, and nothing is queued: it was told nothing
	// and will send the message again.
	conn, stop := whileConnected(s.conn.Conn())
	defer stop()
	ctx, cancel := context.WithTimeout(conn, time.Duration(cfg.FilterTimeout))
	defer cancel()
	origHeader := slices.Clone(t.tx.Header)
	d := t.ftx.Run(ctx, stages.Data, t.tx, log)
	stop()
	ts := d.Records()
	t.stages = append(t.stages, ts...)
	if gone(ctx) {
		s.record(t, trace.Event{Event: "data", Action: "aborted", Reason: "client went away during the checks", Stages: ts})
		t.abort()
		log.Info("aborted", "reason", "client went away during the checks")
		return errLocal
	}
	ev := trace.Event{Event: "data", MessageID: t.tx.Header.Get("Message-Id"), Size: w.Size(), Stages: ts,
		Action: d.Action.String(), Score: d.Score, Stage: d.Stage, Reason: d.Reason, Policy: d.Policy}
	decided := func(r *smtp.SMTPError) error {
		ev.Reply = replyText(r)
		s.record(t, ev)
		s.srv.opts.Metrics.action(d.Action)
		return s.count(r)
	}
	if ctx.Err() != nil && d.Action != stages.Reject {
		ev.Action, ev.Reason = "tempfail", "filter_timeout reached"
		s.logDecision(log, "deferred", errFilterTime, "phase", "data", "reason", ev.Reason)
		d.Action = stages.TempFail
		err := decided(errFilterTime)
		t.abort()
		return err
	}
	switch d.Action {
	case stages.Reject, stages.TempFail:
		r := replyFor(stages.Data, d)
		what := "rejected"
		if d.Action == stages.TempFail {
			what = "deferred"
		}
		s.logDecision(log, what, r, "phase", "data", "stage", d.Stage, "reason", d.Reason, "score", d.Score, "policy", d.Policy)
		err := decided(r)
		t.abort()
		return err
	}
	if len(t.tx.Rcpts) == 0 {
		// Every recipient was removed by a stage: nothing to deliver, and
		// the sender must not learn that from a bounce.
		log.Info("discarded", "reason", "no recipients left after filtering", "stage", d.Stage)
		ev.Action, ev.Reason = "discard", "no recipients left after filtering"
		err := decided(reply(250, 2, 0, 0, "Ok"))
		t.abort()
		return err
	}
	if !slices.Equal(origHeader, t.tx.Header) || d.BodyReplaced {
		if err := rewrite(t.tx, w); err != nil {
			return s.spoolError(t, log, err, "rewrite")
		}
	}
	id := t.tx.QueueID
	if d.Action == stages.Quarantine {
		if err := s.quarantine(t, d, ev.MessageID); err != nil {
			return s.spoolError(t, log, err, "quarantine")
		}
		log.Info("quarantined", "size", w.Size(), "message_id", ev.MessageID, "score", d.Score,
			"stage", d.Stage, "reason", d.Reason, "policy", d.Policy, "delay", time.Since(s.start).Round(time.Millisecond))
		err := decided(reply(250, 2, 0, 0, "Ok: queued as "+id))
		t.abort()
		return err
	}

	env := &spool.Envelope{
		From:       t.tx.From,
		Received:   time.Now().UTC(),
		ClientAddr: s.client.Addr.String(),
		ClientHelo: s.client.Helo,
		MessageID:  ev.MessageID,
	}
	for _, rc := range t.tx.Rcpts {
		env.Rcpts = append(env.Rcpts, spool.Recipient{Addr: rc, Status: spool.Pending})
	}
	if err := s.srv.opts.Queue.Err(); err != nil {
		// 250 would promise a delivery that cannot happen; 451 keeps the
		// mail with the sender until the gateway is fixed.
		log.Error("delivery stopped", "err", err)
		ev.Action, ev.Reason = "tempfail", "delivery stopped"
		d.Action = stages.TempFail
		err := decided(errLocal)
		t.abort()
		return err
	}
	s.mu.Lock()
	gone := t.reset
	s.mu.Unlock()
	if gone {
		// The client reset or left before the end: it was told nothing,
		// so nothing may be delivered.
		s.record(t, trace.Event{Event: "data", Action: "aborted", Reason: "client went away during DATA"})
		t.abort()
		log.Info("aborted", "reason", "client went away during DATA")
		return errLocal
	}
	// Commit is not bound to the client: once the data is in, finishing the
	// commit is cheaper than asking the client to send it all again.
	err = w.Commit(context.Background(), env)
	t.w = nil // committed, or removed by the failed Commit
	if err != nil {
		return s.spoolError(t, log, err, "commit")
	}
	log.Info("accepted", "size", env.Size, "message_id", env.MessageID, "score", d.Score,
		"action", d.Action.String(), "stage", d.Stage, "reason", d.Reason, "policy", d.Policy, "delay", time.Since(s.start).Round(time.Millisecond))
	s.srv.opts.Queue.Enqueue(env)
	return decided(reply(250, 2, 0, 0, "Ok: queued as "+env.ID))
}

// quarantine moves the message into the quarantine with its envelope,
// every verdict and the reason; the spool file is dropped by the caller.
func (s *session) quarantine(t *txn, d pipeline.Decision, messageID string) error {
	w := t.w
	if err := w.Flush(); err != nil {
		return err
	}
	rec := &quarantine.Record{
		ID:         t.tx.QueueID,
		MessageID:  messageID,
		From:       t.tx.From,
		Rcpts:      slices.Clone(t.tx.Rcpts),
		ClientAddr: s.client.Addr.String(),
		ClientHelo: s.client.Helo,
		Size:       w.Size(),
		Score:      d.Score,
		Stage:      d.Stage,
		Reason:     d.Reason,
		Policy:     d.Policy,
		Verdicts:   t.stages,
	}
	return s.srv.opts.Quarantine.Add(rec, w.Path())
}

// actionOf names the action a refusal stands for, for the trace.
func actionOf(r *smtp.SMTPError) string {
	if r.Code/100 == 4 {
		return "tempfail"
	}
	return "reject"
}

// maxHeaderSize bounds the header block of a message, which stages get
// parsed in memory: a message without a blank line is all header.
const maxHeaderSize = 1 << 20

var errHeaderTooLarge = errors.New("header block larger than 1 MiB")

// readMessage parses the header of what was spooled and points tx.Body at
// the rest of the file, so stages read the body without a copy.
func readMessage(tx *stages.Transaction, w *spool.Writer) error {
	f, err := w.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	br := bufio.NewReaderSize(cr, 64*1024)
	h, err := stages.ParseHeader(&headerReader{br: br, left: maxHeaderSize})
	if err != nil {
		return fmt.Errorf("parse header: %w", err)
	}
	offset := cr.n - int64(br.Buffered())
	tx.Header = h
	tx.Body = &spoolBody{path: w.Path(), offset: offset, size: w.Size() - offset}
	return nil
}

// headerReader gives ParseHeader at most left more bytes, then
// errHeaderTooLarge; a line is read in pieces, so even a single line of
// the whole message costs no more than the limit.
type headerReader struct {
	br   *bufio.Reader
	left int
}

func (h *headerReader) ReadString(delim byte) (string, error) {
	var line []byte
	for {
		piece, err := h.br.ReadSlice(delim)
		if len(piece) > h.left {
			return "", errHeaderTooLarge
		}
		h.left -= len(piece)
		line = append(line, piece...)
		if err != bufio.ErrBufferFull {
			return string(line), err
		}
	}
}

func (h *headerReader) Read(p []byte) (int, error) {
	if h.left == 0 {
		return 0, errHeaderTooLarge
	}
	n, err := h.br.Read(p[:min(len(p), h.left)])
	h.left -= n
	return n, err
}

// rewrite replaces the spooled message with the edited header and body.
func rewrite(tx *stages.Transaction, w *spool.Writer) error {
	return w.Rewrite(func(_ io.Reader, dst io.Writer) error {
		if _, err := tx.Header.WriteTo(dst); err != nil {
			return err
		}
		if tx.Body == nil {
			return nil
		}
		body, err := tx.Body.Open()
		if err != nil {
			return err
		}
		defer body.Close()
		_, err = io.Copy(dst, body)
		return err
	})
}

// Reset implements smtp.Session (RSET, a new EHLO, the end of DATA). A
// BDAT transaction's Data may still run then; go-smtp has closed its
// pipe, so it returns soon and ends the transaction itself.
func (s *session) Reset() { s.drop() }

// Logout implements smtp.Session; go-smtp calls it once, when the
// connection closes or STARTTLS starts a new session. A Data still
// running (BDAT) keeps the session's config until it returns.
func (s *session) Logout() error {
	s.mu.Lock()
	s.closed = true
	busy := s.running > 0
	s.mu.Unlock()
	// No wait: Server.Close calls Logout of one connection after the
	// other, and a Data in the data stage may take filter_timeout.
	s.drop()
	if !busy {
		s.srv.release(s.gen)
	}
	return nil
}

// drop ends the transaction in progress. One that Data works on is only
// marked: Data ends it, as only Data may touch its writer, and Commit
// and Abort must not race. A BDAT transaction's Data runs in a goroutine
// of go-smtp's and may outlive the transaction; it answers on a result
// channel of its own (go-smtp patch 2, PATCHES.md), so the next
// transaction need not wait for it.
func (s *session) drop() {
	s.mu.Lock()
	t := s.cur
	s.cur = nil
	var running bool
	if t != nil {
		running = t.inData
		t.reset = running
	}
	s.mu.Unlock()
	if t != nil && !running {
		t.abort()
	}
}

// abort removes the spool file of t unless it was committed, so a client
// that goes away leaves nothing half-queued.
func (t *txn) abort() {
	if t.w == nil {
		return
	}
	if err := t.w.Abort(); err != nil {
		t.log.Warn("spool abort", "err", err)
	}
	t.w = nil
}

// spoolReply is the reply to a failing spool: 452 when the disk is full
// (RFC 5321 §4.2.2), else 451.
func spoolReply(err error) *smtp.SMTPError {
	if spool.IsFull(err) {
		return errNoSpace
	}
	return errLocal
}

// spoolError ends t after the spool failed at op.
func (s *session) spoolError(t *txn, log *slog.Logger, err error, op string) error {
	r := spoolReply(err)
	s.record(t, trace.Event{Event: "data", Action: "tempfail", Reason: op + " failed: " + err.Error(), Reply: replyText(r)})
	t.abort()
	log.Error("spool "+op+" failed", "err", err, "reply", r.Code)
	return s.count(r)
}

func (s *session) fail(r *smtp.SMTPError, phase, reason string, args ...any) error {
	return s.failLog(s.log.With(args...), r, phase, reason)
}

func (s *session) failLog(log *slog.Logger, r *smtp.SMTPError, phase, reason string) error {
	s.logDecision(log, "rejected", r, "phase", phase, "reason", reason)
	return s.count(r)
}

// logDecision writes the one greppable line of a decision.
func (s *session) logDecision(log *slog.Logger, what string, r *smtp.SMTPError, args ...any) {
	log.Info(what, append([]any{"code", r.Code, "reply", replyText(r)}, args...)...)
}

func (s *session) count(r *smtp.SMTPError) error {
	s.srv.opts.Metrics.reply(r.Code)
	return r
}

// receivedField renders the trace field this hop adds (RFC 5321 §4.4), in
// the layout Postfix uses so that existing tooling parses it.
func (s *session) receivedField(t *txn) string {
	var b strings.Builder
	helo := s.client.Helo
	if helo == "" {
		helo = "unknown"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", sanitize(helo), addrLiteral(s.client.Addr))
	proto := "ESMTP"
	if t.utf8 {
		proto = "UTF8SMTP" // RFC 6531 §3.7.3
	}
	if st, ok := s.conn.TLSConnectionState(); ok {
		fmt.Fprintf(&b, "\t(using %s)\r\n", tlsDescription(st.Version, st.CipherSuite))
		proto += "S" // RFC 3848
	}
	fmt.Fprintf(&b, "\tby %s (mailgate) with %s id %s", s.srv.opts.Config.Hostname, proto, t.tx.QueueID)
	if len(t.tx.Rcpts) == 1 {
		// Only a single recipient is named: naming several would disclose
		// Bcc recipients to each other (RFC 5321 §7.2).
		fmt.Fprintf(&b, "\r\n\tfor <%s>", noControls(t.tx.Rcpts[0]))
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

// sanitize keeps client-chosen text from breaking the header it is put in.
func sanitize(s string) string {
	return strings.Map(func(c rune) rune {
		if c <= ' ' || c == '(' || c == ')' || c == '[' || c == ']' || c == 0x7f {
			return '_'
		}
		return c
	}, s)
}

// noControls keeps an address, which Rcpt checked but a stage may have
// added, from breaking the header field it is put in.
func noControls(s string) string {
	return strings.Map(func(c rune) rune {
		if c < ' ' || c == 0x7f {
			return '_'
		}
		return c
	}, s)
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}

// spoolWriter marks write errors as the spool's, so they are told apart
// from read errors, which are the client's.
type spoolWriter struct{ w io.Writer }

func (s spoolWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = spoolWriteError{err}
	}
	return n, err
}

type spoolWriteError struct{ err error }

func (e spoolWriteError) Error() string { return "spool write: " + e.err.Error() }
func (e spoolWriteError) Unwrap() error { return e.err }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// spoolBody is the body of a spooled message: a region of its file. It
// implements stages.Body, and File lets the plugin host pass the file to a
// plugin process instead of the bytes.
type spoolBody struct {
	path   string
	offset int64
	size   int64
}

func (b *spoolBody) Size() int64 { return b.size }

func (b *spoolBody) File() (string, int64) { return b.path, b.offset }

func (b *spoolBody) Open() (io.ReadCloser, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, b.offset, b.size), f}, nil
}
