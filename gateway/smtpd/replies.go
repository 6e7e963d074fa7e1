package smtpd

import (
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/spool"
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
	errUnknownRcpt  = reply(550, 5, 1, 1, "Recipient address rejected")
	errUnverified   = reply(450, 4, 1, 1, "Recipient address not verified, try again later")
	errBigHeader    = reply(552, 5, 3, 4, "Message header too large")
	errBadSender    = reply(501, 5, 1, 7, "Bad sender address syntax")
	errNeedUTF8     = reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8")
	errEarlyTalker  = reply(554, 5, 7, 1, "Access denied")
)

func reply(code, a, b, c int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, c}, Message: text}
}

// queued is the reply to a message taken, into the spool or the quarantine.
func queued(id string) *smtp.SMTPError { return reply(250, 2, 0, 0, "Ok: queued as "+id) }

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

// spoolReply is the reply to a failing spool: 452 when the disk is full
// (RFC 5321 §4.2.2), else 451.
func spoolReply(err error) *smtp.SMTPError {
	if spool.IsFull(err) {
		return errNoSpace
	}
	return errLocal
}

// actionOf names the action a refusal stands for, for the trace.
func actionOf(r *smtp.SMTPError) string {
	if r.Code/100 == 4 {
		return "tempfail"
	}
	return "reject"
}

// replyText renders a reply as the client reads it: "550 5.7.1 text".
func replyText(r *smtp.SMTPError) string {
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, r.EnhancedCode[0], r.EnhancedCode[1], r.EnhancedCode[2], r.Message)
}
