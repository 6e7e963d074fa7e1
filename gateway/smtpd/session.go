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
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/gateway/trace"
	"github.com/mailgate/mailgate/stages"
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
	// early is a rejection from connect, helo or mail, answered at RCPT.
	early      *pipeline.Decision
	earlyPhase stages.Phase
	// connStages are the connect and helo results, for each transaction's
	// trace and quarantine record.
	connStages []trace.Stage

	// The transaction in progress.
	ftx   *pipeline.Session
	tx    *stages.Transaction
	w     *spool.Writer
	utf8  bool
	txLog *slog.Logger
	// txStages are the stage results of the transaction so far, all
	// phases, connect and helo included.
	txStages []trace.Stage
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
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(gen.cfg.Server.FilterTimeout))
	defer cancel()
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo} {
		d := sess.base.Run(ctx, ph, tx, sess.log)
		sess.connStages = append(sess.connStages, trace.Stages(d.Trace)...)
		if d.Action == stages.Reject || d.Action == stages.TempFail {
			sess.early, sess.earlyPhase = &d, ph
			break
		}
	}
	return sess
}

// record adds an event to the trace of the transaction in progress.
func (s *session) record(e trace.Event) {
	if s.tx == nil {
		return
	}
	e.QueueID = s.tx.QueueID
	s.srv.opts.Trace.Record(e)
}

// Mail implements smtp.Session: MAIL FROM starts a transaction. Its queue ID
// is fixed here so that every later line about it, a rejection at RCPT
// included, carries the ID.
func (s *session) Mail(from string, opts *smtp.MailOptions) error {
	s.abort()
	if !opts.UTF8 && !isASCII(from) {
		return s.fail(errNeedUTF8, "mail", "non-ASCII sender without SMTPUTF8", "from", from)
	}
	if from != "" {
		if why := badAddress(from, s.client.Trusted); why != "" {
			return s.fail(errBadSender, "mail", why, "from", from)
		}
	}
	w, err := s.srv.opts.Spool.Create()
	if err != nil {
		return s.spoolError(err, "create")
	}
	s.w = w
	s.utf8 = opts.UTF8
	s.tx = &stages.Transaction{QueueID: w.ID(), Client: s.client, From: from}
	s.txLog = s.log.With("queue_id", w.ID(), "from", from)
	s.ftx = s.base.Fork()
	s.txStages = slices.Clone(s.connStages)
	s.record(trace.Event{Time: s.start, Event: "connect", Client: s.client.Addr.String(), Helo: s.client.Helo,
		TLS: s.client.TLS, Stages: s.connStages})
	var mailStages []trace.Stage
	if s.early == nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.gen.cfg.Server.FilterTimeout))
		defer cancel()
		d := s.ftx.Run(ctx, stages.Mail, s.tx, s.txLog)
		mailStages = trace.Stages(d.Trace)
		s.txStages = append(s.txStages, mailStages...)
		if d.Action == stages.Reject || d.Action == stages.TempFail {
			s.early, s.earlyPhase = &d, stages.Mail
		}
	}
	s.record(trace.Event{Event: "mail", From: &from, Stages: mailStages})
	s.srv.opts.Metrics.reply(250)
	return nil
}

// Rcpt implements smtp.Session: relay control, then the rcpt phase.
func (s *session) Rcpt(to string, opts *smtp.RcptOptions) error {
	if s.tx == nil {
		return s.fail(errLocal, "rcpt", "no transaction")
	}
	log := s.txLog.With("rcpt", to)
	refuse := func(r *smtp.SMTPError, e trace.Event) error {
		e.Event, e.Rcpts, e.Reply = "rcpt", []string{to}, replyText(r)
		s.record(e)
		return s.count(r)
	}
	if s.early != nil {
		r := replyFor(stages.Rcpt, *s.early)
		s.logDecision(log, "rejected", r, "phase", s.earlyPhase.String(), "stage", s.early.Stage, "reason", s.early.Reason)
		s.srv.opts.Metrics.action(s.early.Action)
		return refuse(r, trace.Event{Action: s.early.Action.String(), Stage: s.early.Stage,
			Reason: s.earlyPhase.String() + ": " + s.early.Reason, Score: s.early.Score})
	}
	if !s.utf8 && !isASCII(to) {
		s.failLog(log, errNeedUTF8, "rcpt", "non-ASCII recipient without SMTPUTF8")
		return refuse(errNeedUTF8, trace.Event{Action: "reject", Reason: "non-ASCII recipient without SMTPUTF8"})
	}
	if why := badAddress(to, s.client.Trusted); why != "" {
		s.failLog(log, errBadRcpt, "rcpt", why)
		return refuse(errBadRcpt, trace.Event{Action: "reject", Reason: why})
	}
	domain := to[strings.LastIndexByte(to, '@')+1:]
	// An open relay is the worst bug a gateway can have: mail is taken only
	// for domains we route, unless the client is trusted.
	if !s.client.Trusted && !s.gen.routes.HasRoute(domain) {
		reason := "relay denied: no route for " + domain
		s.logDecision(log, "rejected", errRelayDenied, "phase", "rcpt", "reason", reason)
		return refuse(errRelayDenied, trace.Event{Action: "reject", Reason: reason})
	}
	s.tx.Rcpts = append(s.tx.Rcpts, to)
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(s.gen.cfg.Server.FilterTimeout))
	defer cancel()
	d := s.ftx.Run(ctx, stages.Rcpt, s.tx, log)
	ts := trace.Stages(d.Trace)
	switch d.Action {
	case stages.Reject, stages.TempFail:
		// A TempFail here may be the pipeline's 452 4.5.3 for a recipient
		// under another policy than those accepted before: the client
		// sends it again in a transaction of its own (RFC 5321
		// §4.5.3.1.10), so one message never mixes policies.
		s.tx.Rcpts = s.tx.Rcpts[:len(s.tx.Rcpts)-1]
		r := replyFor(stages.Rcpt, d)
		what := "rejected"
		if d.Action == stages.TempFail {
			what = "deferred"
		}
		s.logDecision(log, what, r, "phase", "rcpt", "stage", d.Stage, "reason", d.Reason, "policy", d.Policy)
		s.srv.opts.Metrics.action(d.Action)
		return refuse(r, trace.Event{Action: d.Action.String(), Stage: d.Stage, Reason: d.Reason, Score: d.Score, Policy: d.Policy, Stages: ts})
	}
	s.txStages = append(s.txStages, ts...)
	s.record(trace.Event{Event: "rcpt", Rcpts: []string{to}, Action: d.Action.String(), Score: d.Score, Policy: d.Policy, Stages: ts})
	s.srv.opts.Metrics.reply(250)
	return nil
}

// Data implements smtp.Session: stream the message into the spool, run the
// data-phase stages while the client waits, and answer 250 only after the
// message and its envelope are on disk.
func (s *session) Data(r io.Reader) error {
	if s.tx == nil || s.w == nil {
		return s.fail(errLocal, "data", "no transaction")
	}
	log := s.txLog.With("rcpts", s.tx.Rcpts)
	w := s.w
	cfg := &s.gen.cfg.Server
	// refuse ends the transaction with reply r and traces why.
	refuse := func(r *smtp.SMTPError, reason string) error {
		s.record(trace.Event{Event: "data", Action: actionOf(r), Reason: reason, Reply: replyText(r), Size: w.Size()})
		s.abort()
		return s.failLog(log, r, "data", reason)
	}

	// Reading: refresh the read deadline as data arrives so a slow but
	// moving client is not cut off, while a stalled one is (data_timeout).
	dr := &deadlineReader{r: r, c: s.conn.Conn(), d: time.Duration(cfg.DataTimeout)}
	in := newLineEndReader(dr, cfg.BareLF == "reject")
	hs := newHeaderScanner()
	received := s.receivedField()
	if _, err := io.WriteString(w, received); err != nil {
		return s.spoolErrorLog(log, err, "write")
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
			err := refuse(errDataTimeout, "data timeout")
			s.conn.Close()
			return err
		case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, smtp.ErrDataReset):
			s.record(trace.Event{Event: "data", Action: "aborted", Reason: "client went away during DATA"})
			s.abort()
			log.Info("aborted", "reason", "client went away during DATA")
			return errLocal
		default:
			// Read errors other than the above are the client's; write
			// errors are the spool's.
			var sw spoolWriteError
			if errors.As(err, &sw) {
				return s.spoolErrorLog(log, err, "write")
			}
			s.record(trace.Event{Event: "data", Action: "aborted", Reason: err.Error()})
			s.abort()
			log.Info("aborted", "reason", err.Error())
			return errLocal
		}
	}
	if hs.received > cfg.MaxHops {
		return refuse(errTooManyHops, fmt.Sprintf("mail loop: %d Received fields", hs.received))
	}

	if err := s.readMessage(w); err != nil {
		return s.spoolErrorLog(log, err, "read back")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.FilterTimeout))
	defer cancel()
	origHeader := slices.Clone(s.tx.Header)
	d := s.ftx.Run(ctx, stages.Data, s.tx, log)
	ts := trace.Stages(d.Trace)
	s.txStages = append(s.txStages, ts...)
	ev := trace.Event{Event: "data", MessageID: s.tx.Header.Get("Message-Id"), Size: w.Size(), Stages: ts,
		Action: d.Action.String(), Score: d.Score, Stage: d.Stage, Reason: d.Reason, Policy: d.Policy}
	decided := func(r *smtp.SMTPError) error {
		ev.Reply = replyText(r)
		s.record(ev)
		s.srv.opts.Metrics.action(d.Action)
		return s.count(r)
	}
	if ctx.Err() != nil && d.Action != stages.Reject {
		ev.Action, ev.Reason = "tempfail", "filter_timeout reached"
		s.logDecision(log, "deferred", errFilterTime, "phase", "data", "reason", ev.Reason)
		d.Action = stages.TempFail
		err := decided(errFilterTime)
		s.abort()
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
		s.abort()
		return err
	}
	if len(s.tx.Rcpts) == 0 {
		// Every recipient was removed by a stage: nothing to deliver, and
		// the sender must not learn that from a bounce.
		log.Info("discarded", "reason", "no recipients left after filtering", "stage", d.Stage)
		ev.Action, ev.Reason = "discard", "no recipients left after filtering"
		err := decided(reply(250, 2, 0, 0, "Ok"))
		s.abort()
		return err
	}
	if !slices.Equal(origHeader, s.tx.Header) || d.BodyReplaced {
		if err := s.rewrite(w); err != nil {
			return s.spoolErrorLog(log, err, "rewrite")
		}
	}
	id := s.tx.QueueID
	if d.Action == stages.Quarantine {
		if err := s.quarantine(w, d, ev.MessageID); err != nil {
			return s.spoolErrorLog(log, err, "quarantine")
		}
		log.Info("quarantined", "size", w.Size(), "message_id", ev.MessageID, "score", d.Score,
			"stage", d.Stage, "reason", d.Reason, "policy", d.Policy, "delay", time.Since(s.start).Round(time.Millisecond))
		err := decided(reply(250, 2, 0, 0, "Ok: queued as "+id))
		s.abort()
		return err
	}

	env := &spool.Envelope{
		From:       s.tx.From,
		Received:   time.Now().UTC(),
		ClientAddr: s.client.Addr.String(),
		ClientHelo: s.client.Helo,
		MessageID:  ev.MessageID,
	}
	for _, rc := range s.tx.Rcpts {
		env.Rcpts = append(env.Rcpts, spool.Recipient{Addr: rc, Status: spool.Pending})
	}
	// Commit is not bound to the client: once the data is in, finishing the
	// commit is cheaper than asking the client to send it all again.
	if err := w.Commit(context.Background(), env); err != nil {
		s.w = nil
		return s.spoolErrorLog(log, err, "commit")
	}
	s.w = nil
	log.Info("accepted", "size", env.Size, "message_id", env.MessageID, "score", d.Score,
		"action", d.Action.String(), "stage", d.Stage, "reason", d.Reason, "policy", d.Policy, "delay", time.Since(s.start).Round(time.Millisecond))
	s.srv.opts.Queue.Enqueue(env)
	err = decided(reply(250, 2, 0, 0, "Ok: queued as "+env.ID))
	s.tx = nil
	return err
}

// quarantine moves the message into the quarantine with its envelope,
// every verdict and the reason; the spool file is dropped by the caller.
func (s *session) quarantine(w *spool.Writer, d pipeline.Decision, messageID string) error {
	if err := w.Flush(); err != nil {
		return err
	}
	rec := &quarantine.Record{
		ID:         s.tx.QueueID,
		MessageID:  messageID,
		From:       s.tx.From,
		Rcpts:      slices.Clone(s.tx.Rcpts),
		ClientAddr: s.client.Addr.String(),
		ClientHelo: s.client.Helo,
		Size:       w.Size(),
		Score:      d.Score,
		Stage:      d.Stage,
		Reason:     d.Reason,
		Policy:     d.Policy,
		Verdicts:   s.txStages,
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

// readMessage parses the header of what was spooled and points tx.Body at
// the rest of the file, so stages read the body without a copy.
func (s *session) readMessage(w *spool.Writer) error {
	f, err := w.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	br := bufio.NewReaderSize(cr, 64*1024)
	h, err := stages.ParseHeader(br)
	if err != nil {
		return fmt.Errorf("parse header: %w", err)
	}
	offset := cr.n - int64(br.Buffered())
	s.tx.Header = h
	s.tx.Body = &spoolBody{path: w.Path(), offset: offset, size: w.Size() - offset}
	return nil
}

// rewrite replaces the spooled message with the edited header and body.
func (s *session) rewrite(w *spool.Writer) error {
	return w.Rewrite(func(_ io.Reader, dst io.Writer) error {
		if _, err := s.tx.Header.WriteTo(dst); err != nil {
			return err
		}
		if s.tx.Body == nil {
			return nil
		}
		body, err := s.tx.Body.Open()
		if err != nil {
			return err
		}
		defer body.Close()
		_, err = io.Copy(dst, body)
		return err
	})
}

// Reset implements smtp.Session (RSET, a new EHLO, the end of DATA).
func (s *session) Reset() { s.abort() }

// Logout implements smtp.Session; go-smtp calls it once, when the
// connection closes or STARTTLS starts a new session.
func (s *session) Logout() error {
	s.abort()
	s.srv.release(s.gen)
	return nil
}

// abort drops the transaction in progress; an uncommitted spool file is
// removed so a client that goes away leaves nothing half-queued.
func (s *session) abort() {
	if s.w != nil {
		if err := s.w.Abort(); err != nil {
			s.log.Warn("spool abort", "queue_id", s.w.ID(), "err", err)
		}
		s.w = nil
	}
	s.tx, s.ftx, s.txLog, s.txStages = nil, nil, nil, nil
	if s.earlyPhase == stages.Mail {
		s.early, s.earlyPhase = nil, 0
	}
}

func (s *session) spoolError(err error, op string) error {
	return s.spoolErrorLog(s.log, err, op)
}

func (s *session) spoolErrorLog(log *slog.Logger, err error, op string) error {
	r := errLocal
	if spool.IsFull(err) {
		r = errNoSpace
	}
	s.record(trace.Event{Event: "data", Action: "tempfail", Reason: op + " failed: " + err.Error(), Reply: replyText(r)})
	s.abort()
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
func (s *session) receivedField() string {
	var b strings.Builder
	helo := s.client.Helo
	if helo == "" {
		helo = "unknown"
	}
	fmt.Fprintf(&b, "Received: from %s ([%s])\r\n", sanitize(helo), addrLiteral(s.client.Addr))
	proto := "ESMTP"
	if s.utf8 {
		proto = "UTF8SMTP" // RFC 6531 §3.7.3
	}
	if st, ok := s.conn.TLSConnectionState(); ok {
		fmt.Fprintf(&b, "\t(using %s)\r\n", tlsDescription(st.Version, st.CipherSuite))
		proto += "S" // RFC 3848
	}
	fmt.Fprintf(&b, "\tby %s (mailgate) with %s id %s", s.srv.opts.Config.Hostname, proto, s.tx.QueueID)
	if len(s.tx.Rcpts) == 1 {
		// Only a single recipient is named: naming several would disclose
		// Bcc recipients to each other (RFC 5321 §7.2).
		fmt.Fprintf(&b, "\r\n\tfor <%s>", noControls(s.tx.Rcpts[0]))
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

type deadlineReader struct {
	r io.Reader
	c net.Conn
	d time.Duration
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	if d.d > 0 {
		d.c.SetReadDeadline(time.Now().Add(d.d))
	}
	return d.r.Read(p)
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
