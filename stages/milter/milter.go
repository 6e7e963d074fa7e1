// Package milter is the milter stage kind: it asks an existing Sendmail
// milter (opendkim, clamav-milter, spamass-milter, rspamd's proxy, ...)
// about each message, as Postfix would, and turns its answer and its
// modifications into a verdict and edits.
//
// The stage runs at the end of DATA and replays the whole SMTP
// transaction to the milter in one conversation (connect, helo, mail,
// rcpt, data, header, end of header, body, end of message), as
// before-queue proxies do. It speaks milter protocol version 6 on
// go-milter's protocol definitions; go-milter v0.5.0's client lacks
// SMFIC_DATA, SMFIC_QUIT_NC, SMFIF_SETSYMLIST, per-step timeouts and
// cancellation, so the packets are written here.
package milter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// Milter is a stage that asks one milter.
type Milter struct {
	env               stages.Env
	address           string // as configured, for logs and reasons
	network, dialAddr string

	connectTimeout time.Duration
	commandTimeout time.Duration
	contentTimeout time.Duration
	defaultAction  stages.Action
	defaultName    string
	overrides      map[string]string // macro values from the config

	log     *slog.Logger
	pool    pool
	circuit circuit
}

var (
	_ stages.Filter = (*Milter)(nil)
	_ stages.Closer = (*Milter)(nil)
)

// Info declares the data phase only: the conversation is replayed at the
// end of DATA, when the whole transaction is known.
func (m *Milter) Info() stages.Info {
	return stages.Info{
		Kind:    "milter",
		Version: "1",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody,
		Edits:   true,
		Results: Results(),
	}
}

// Results are the result words of the kind's verdicts: the milter's
// answer, or "unavailable" for default_action.
func Results() []string {
	return []string{"continue", "accept", "reject", "tempfail", "discard", "quarantine", "unavailable"}
}

// Close closes the idle connections.
func (m *Milter) Close() error {
	m.pool.close()
	return nil
}

// errCircuitOpen is the reason the milter was not asked.
var errCircuitOpen = errors.New("not asked: it failed repeatedly and is given a pause (circuit open)")

// localError is a failure on the gateway's side (the spooled body cannot
// be read): the stage broke, the milter did not.
type localError struct{ err error }

func (e localError) Error() string { return e.err.Error() }
func (e localError) Unwrap() error { return e.err }

// Run asks the milter about the message. When the milter cannot be asked
// (down, too slow, closed the connection, sent garbage), the verdict is
// default_action; an error is returned only when the gateway's side broke
// or the stage's own deadline passed.
func (m *Milter) Run(ctx context.Context, p stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if p != stages.Data {
		return stages.Verdict{}, nil
	}
	if !m.circuit.allow() {
		return m.fallback(tx, errCircuitOpen), nil
	}
	wctx, cancel := workContext(ctx)
	defer cancel()
	out, err := m.ask(wctx, tx)
	if le := (localError{}); errors.As(err, &le) {
		m.circuit.success() // the milter is not to blame
		return stages.Verdict{}, fmt.Errorf("milter %s: %w", m.address, le.err)
	}
	if err != nil {
		if m.circuit.failure() {
			m.log.Error("milter keeps failing; not asking it for a while (circuit open)",
				"failures", circuitThreshold, "retry_in", m.circuit.retry.String())
		}
		if ctx.Err() != nil {
			return stages.Verdict{}, fmt.Errorf("milter %s: %w", m.address, context.Cause(ctx))
		}
		if dl, ok := wctx.Deadline(); ok && !time.Now().Before(dl) {
			err = fmt.Errorf("no answer within the stage's timeout: %w", err)
		}
		return m.fallback(tx, err), nil
	}
	if m.circuit.success() {
		m.log.Info("milter answers again (circuit closed)")
	}
	return m.verdict(tx, out), nil
}

// workContext keeps back a little of the caller's deadline, so that a
// milter slower than the stage's timeout gets default_action rather than
// the pipeline's on_error.
func workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	dl, ok := ctx.Deadline()
	if !ok {
		return context.WithCancel(ctx)
	}
	margin := min(time.Until(dl)/10, 500*time.Millisecond)
	return context.WithDeadline(ctx, dl.Add(-margin))
}

// fallback is the default_action verdict, with the log line that says why.
func (m *Milter) fallback(tx *stages.Transaction, err error) stages.Verdict {
	m.log.Warn("milter failed; applying default_action", "queue_id", tx.QueueID,
		"error", err.Error(), "default_action", m.defaultName)
	return stages.Verdict{
		Action: m.defaultAction,
		Result: "unavailable",
		Reason: fmt.Sprintf("milter %s: %v; default_action %s", m.address, err, m.defaultName),
	}
}

// ask runs one conversation on a kept session or a new one. A kept
// session the milter closed meanwhile fails before any answer; the
// conversation then runs again on a new connection.
func (m *Milter) ask(ctx context.Context, tx *stages.Transaction) (outcome, error) {
	s, bound := m.pool.get(tx.Client)
	kept := s != nil
	if !kept {
		var err error
		if s, err = dial(ctx, m.network, m.dialAddr, m.connectTimeout); err != nil {
			return outcome{}, err
		}
	}
	out, err := m.converse(ctx, s, tx, bound)
	if err != nil && kept && !s.heard && ctx.Err() == nil && !errors.As(err, &localError{}) {
		s.nc.Close()
		m.log.Debug("kept milter connection was closed; reconnecting", "error", err.Error())
		if s, err = dial(ctx, m.network, m.dialAddr, m.connectTimeout); err != nil {
			return outcome{}, err
		}
		out, err = m.converse(ctx, s, tx, false)
	}
	if err != nil {
		s.nc.Close()
		return outcome{}, err
	}
	m.release(ctx, s, out, tx.Client)
	return out, nil
}

// release keeps the session for another transaction if the milter's state
// allows it (see pool), or ends it with SMFIC_QUIT.
func (m *Milter) release(ctx context.Context, s *session, out outcome, client stages.Client) {
	s.timeout, s.limit = m.commandTimeout, time.Time{}
	if ctx.Err() != nil {
		// The caller gave up; an interrupted session is not reused.
		s.nc.Close()
		return
	}
	switch {
	case out.complete && out.reply.code == gomilter.ActContinue && s.version >= 6:
		// libmilter takes SMFIC_QUIT_NC after the end of a message
		// (state ST_ENDM), then expects SMFIC_CONNECT.
		if s.write(byte(gomilter.CodeQuitNewConn), nil) == nil {
			m.pool.put(s, nil)
			return
		}
	case out.inMessage:
		// Decided within the message: SMFIC_ABORT ends it, and the
		// milter waits for the client's next MAIL.
		if s.write(byte(gomilter.CodeAbort), nil) == nil {
			m.pool.put(s, &client)
			return
		}
	case out.complete || out.afterHelo:
		m.pool.put(s, &client)
		return
	}
	s.timeout = time.Second // best effort: the milter need not read it
	s.write(byte(gomilter.CodeQuit), nil)
	s.nc.Close()
}

// outcome is how a conversation ended.
type outcome struct {
	step      string // where the milter decided, for the reason
	reply     reply  // its deciding reply
	mods      mods   // modifications at the end of the message
	complete  bool   // the end of the message was reached
	afterHelo bool   // decided at MAIL or later: the connection is still on
	inMessage bool   // decided between RCPT and the body: a message is open
}

// converse replays the transaction to the milter, leaving out the steps
// the milter asked to skip, and stops at the first reply other than
// continue. A bound session knows the client already and starts at MAIL.
func (m *Milter) converse(ctx context.Context, s *session, tx *stages.Transaction, bound bool) (outcome, error) {
	stop := context.AfterFunc(ctx, s.interrupt)
	defer stop()
	s.limit, s.ctx, s.heard = time.Time{}, ctx, false
	if dl, ok := ctx.Deadline(); ok {
		s.limit = dl
	}
	out, err := m.steps(s, tx, bound)
	s.ctx = nil
	if err != nil && ctx.Err() != nil && !errors.As(err, &localError{}) {
		err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
	}
	return out, err
}

func (m *Milter) steps(s *session, tx *stages.Transaction, bound bool) (outcome, error) {
	type step struct {
		name    string
		skip    gomilter.OptProtocol // the milter asked not to see it
		stage   gomilter.Stage       // whose macros go with it
		code    gomilter.Code
		data    []byte
		rcpt    string
		noReply gomilter.OptProtocol
	}
	var steps []step
	if !bound {
		steps = append(steps, step{"connect", gomilter.OptNoConnect, gomilter.StageConnect, gomilter.CodeConn, connectInfo(tx.Client), "", gomilter.OptNoConnReply})
	}
	if tx.Client.Helo != "" && !bound {
		steps = append(steps, step{"helo", gomilter.OptNoHelo, gomilter.StageHelo, gomilter.CodeHelo, cstrings(tx.Client.Helo), "", gomilter.OptNoHeloReply})
	}
	// ESMTP parameters of MAIL and RCPT are not kept by the gateway, so
	// none are sent.
	steps = append(steps, step{"mail", gomilter.OptNoMailFrom, gomilter.StageMailFrom, gomilter.CodeMail, cstrings("<" + tx.From + ">"), "", gomilter.OptNoMailReply})
	for _, r := range tx.Rcpts {
		steps = append(steps, step{"rcpt <" + r + ">", gomilter.OptNoRcptTo, gomilter.StageRcptTo, gomilter.CodeRcpt, cstrings("<" + r + ">"), r, gomilter.OptNoRcptReply})
	}
	// SMFIC_DATA exists from protocol version 4 on.
	if s.version >= 4 {
		steps = append(steps, step{"data", gomilter.OptNoData, gomilter.StageData, gomilter.CodeData, nil, "", gomilter.OptNoDataReply})
	}

	s.timeout = m.commandTimeout
	for _, st := range steps {
		if s.proto&st.skip != 0 {
			continue
		}
		r, err := s.command(st.stage, m.macros(s, st.stage, tx, st.rcpt), st.code, st.data, st.noReply)
		if err != nil {
			return outcome{}, fmt.Errorf("%s: %w", st.name, err)
		}
		if decided(r) {
			return outcome{step: st.name, reply: r, afterHelo: st.code != gomilter.CodeConn && st.code != gomilter.CodeHelo,
				inMessage: st.code == gomilter.CodeRcpt || st.code == gomilter.CodeData}, nil
		}
	}

	s.timeout = m.contentTimeout
	if s.proto&gomilter.OptNoHeaders == 0 {
		for _, f := range tx.Header {
			if f.Name == "" {
				continue // a line that is no field: nothing a milter could parse
			}
			// Header values go with the LF folding of the MTA's queue
			// file, and without the space after the colon unless the
			// milter asked for the value as written (SMFIP_HDR_LEADSPC):
			// then it gets every byte after the colon, so that a signer
			// such as opendkim hashes "Subject:x" as it is relayed.
			v := f.Value
			if s.proto&gomilter.OptHeaderLeadingSpace != 0 {
				v = f.Raw()[len(f.Name)+1:]
			}
			v = strings.ReplaceAll(v, "\r\n", "\n")
			r, err := s.command(0, nil, gomilter.CodeHeader, cstrings(f.Name, v), gomilter.OptNoHeaderReply)
			if err != nil {
				return outcome{}, fmt.Errorf("header %s: %w", f.Name, err)
			}
			if decided(r) {
				return outcome{step: "header " + f.Name, reply: r, afterHelo: true, inMessage: true}, nil
			}
		}
	}
	if s.proto&gomilter.OptNoEOH == 0 {
		r, err := s.command(gomilter.StageEOH, m.macros(s, gomilter.StageEOH, tx, ""), gomilter.CodeEOH, nil, gomilter.OptNoEOHReply)
		if err != nil {
			return outcome{}, fmt.Errorf("end of header: %w", err)
		}
		if decided(r) {
			return outcome{step: "end of header", reply: r, afterHelo: true, inMessage: true}, nil
		}
	}
	if s.proto&gomilter.OptNoBody == 0 && tx.Body != nil {
		r, err := sendBody(s, tx.Body)
		if err != nil {
			return outcome{}, err
		}
		if decided(r) {
			return outcome{step: "body", reply: r, afterHelo: true, inMessage: true}, nil
		}
	}

	if kv := m.macros(s, gomilter.StageEOM, tx, ""); len(kv) > 0 {
		if err := s.write(byte(gomilter.CodeMacro), macroPacket(gomilter.CodeEOB, kv)); err != nil {
			return outcome{}, fmt.Errorf("end of message: %w", err)
		}
	}
	if err := s.write(byte(gomilter.CodeEOB), nil); err != nil {
		return outcome{}, fmt.Errorf("end of message: %w", err)
	}
	out := outcome{step: "end of message", complete: true}
	for {
		p, err := s.read()
		if err != nil {
			return outcome{}, fmt.Errorf("end of message: %w", err)
		}
		if p.code == respProgress {
			continue
		}
		if ok, err := out.mods.add(p); err != nil {
			return outcome{}, fmt.Errorf("end of message: %w", err)
		} else if ok {
			continue
		}
		switch gomilter.ActionCode(p.code) {
		case gomilter.ActAccept, gomilter.ActContinue, gomilter.ActDiscard, gomilter.ActReject, gomilter.ActTempFail:
			out.reply = reply{code: gomilter.ActionCode(p.code)}
			return out, nil
		case gomilter.ActReplyCode:
			if out.reply, err = replyCode(p.data); err != nil {
				return outcome{}, fmt.Errorf("end of message: %w", err)
			}
			return out, nil
		}
		return outcome{}, fmt.Errorf("end of message: unexpected %s", describe(p.code))
	}
}

// decided reports whether a reply ends the conversation. SMFIR_SKIP
// outside the body means nothing more than continue.
func decided(r reply) bool {
	return r.code != gomilter.ActContinue && r.code != gomilter.ActSkip
}

// sendBody sends the body in chunks of at most MaxBodyChunk, stopping
// early when the milter answers SMFIR_SKIP (it has seen enough).
func sendBody(s *session, body stages.Body) (reply, error) {
	rc, err := body.Open()
	if err != nil {
		return reply{}, localError{fmt.Errorf("open body: %w", err)}
	}
	defer rc.Close()
	buf := make([]byte, gomilter.MaxBodyChunk)
	for {
		n, err := io.ReadFull(rc, buf)
		if n > 0 {
			r, werr := s.command(0, nil, gomilter.CodeBody, buf[:n], gomilter.OptNoBodyReply)
			if werr != nil {
				return reply{}, fmt.Errorf("body: %w", werr)
			}
			if r.code == gomilter.ActSkip {
				return replyContinue, nil
			}
			if decided(r) {
				return r, nil
			}
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return replyContinue, nil
		}
		if err != nil {
			return reply{}, localError{fmt.Errorf("read body: %w", err)}
		}
	}
}

// verdict turns the milter's answer into a verdict, as Postfix applies
// it. A milter's accept means "no more questions for this message", not
// an allow-list hit, so it is Continue and the rest of the chain runs.
func (m *Milter) verdict(tx *stages.Transaction, out outcome) stages.Verdict {
	at := " at " + out.step
	switch out.reply.code {
	case gomilter.ActReject:
		return stages.Verdict{Action: stages.Reject, Result: "reject", Reason: "milter " + m.address + ": reject" + at}
	case gomilter.ActTempFail:
		return stages.Verdict{Action: stages.TempFail, Result: "tempfail", Reason: "milter " + m.address + ": tempfail" + at}
	case gomilter.ActReplyCode:
		r := out.reply.smtp
		v := stages.Verdict{Action: stages.Reject, Result: "reject", Reply: r}
		if r.Code < 500 {
			v.Action, v.Result = stages.TempFail, "tempfail"
		}
		v.Reason = fmt.Sprintf("milter %s: %s%s", m.address, r, at)
		return v
	case gomilter.ActDiscard:
		// The gateway has no discard: deleting every recipient makes it
		// answer 250 and drop the message, which is what discard means.
		v := stages.Verdict{Action: stages.Continue, Result: "discard", Reason: "milter " + m.address + ": discard" + at}
		for _, r := range tx.Rcpts {
			v.Edits = append(v.Edits, stages.Edit{Op: stages.RcptDelete, Value: r})
		}
		return v
	}
	word := "continue"
	if out.reply.code == gomilter.ActAccept {
		word = "accept"
	}
	v := stages.Verdict{Action: stages.Continue, Result: word, Edits: out.mods.all()}
	v.Reason = fmt.Sprintf("milter %s: %s%s, %d edits", m.address, word, at, len(v.Edits))
	if q := out.mods.quarantine; q != nil {
		v.Action, v.Result = stages.Quarantine, "quarantine"
		v.Reason = fmt.Sprintf("milter %s: quarantine%s: %s", m.address, at, *q)
	}
	return v
}
