package smtpd

import (
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/spool"
)

// Replies. Texts are generic on purpose: they reach the sender, details go
// to the log. Codes follow RFC 5321 §4.2 and enhanced codes RFC 3463.
var (
	errRelayDenied = reply(554, 5, 7, 1, "Relay access denied")
	errLocal       = reply(451, 4, 3, 0, "Local error in processing, try again later")
	errNoSpace     = reply(452, 4, 3, 1, "Insufficient system storage")
	errTooManyHops = reply(554, 5, 4, 6, "Too many hops")
	errBareLF      = reply(550, 5, 5, 2, "Message contains bare CR or LF")
	errLineTooLong = reply(500, 5, 5, 2, "Line too long")
	errDataTimeout = reply(421, 4, 4, 2, "Timeout reading message, closing connection")
	errFilterTime  = reply(451, 4, 3, 2, "Message checks timed out, try again later")
	errBadRcpt     = reply(501, 5, 1, 3, "Bad recipient address syntax")
	errUnknownRcpt = reply(550, 5, 1, 1, "Recipient address rejected")
	errUnverified  = reply(450, 4, 1, 1, "Recipient address not verified, try again later")
	errBigHeader   = reply(552, 5, 3, 4, "Message header too large")
	errBadSender   = reply(501, 5, 1, 7, "Bad sender address syntax")
	errNeedUTF8    = reply(553, 5, 6, 7, "Non-ASCII address requires SMTPUTF8")
	// A rate limit: 450 4.7.1 at MAIL and at RCPT, as Postfix's anvil
	// limits ("too much mail", "too many recipients"), or 421 4.7.0 and
	// close (RFC 5321 §3.8) for a rule with action = "disconnect".
	errRateLimited  = reply(450, 4, 7, 1, "Rate limit exceeded, try again later")
	errRateLimitBye = reply(421, 4, 7, 0, "Rate limit exceeded, closing connection")
	errEarlyTalker  = reply(554, 5, 7, 1, "Access denied")
)

func reply(code, a, b, c int, text string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{a, b, c}, Message: text}
}

// rateLimited is the reply to an event a rate limit refused.
func rateLimited(x *ratelimit.Exceeded) *smtp.SMTPError {
	if x.Disconnect {
		return errRateLimitBye
	}
	return errRateLimited
}

// queued is the reply to a message taken, into the spool or the quarantine.
func queued(id string) *smtp.SMTPError { return reply(250, 2, 0, 0, "Ok: queued as "+id) }

// replyFor is the reply to a Reject or TempFail decision. The pipeline
// gives each one a reply of its action's class with a line of text
// (Decision.Reply), a stage's own or a generic one; a reply without an
// enhanced code gets x.7.1 (RFC 3463 §3.8: delivery not authorized), and
// control characters become spaces.
func replyFor(d pipeline.Decision) *smtp.SMTPError {
	r := d.Reply
	e := smtp.EnhancedCode(r.Enhanced)
	if r.Enhanced == [3]int{} {
		e = smtp.EnhancedCode{r.Code / 100, 7, 1}
	}
	text := strings.Map(func(c rune) rune {
		if c < 0x20 || c == 0x7f {
			return ' '
		}
		return c
	}, r.Text)
	return &smtp.SMTPError{Code: r.Code, EnhancedCode: e, Message: text}
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
