package router

import (
	"errors"
	"fmt"
	"strings"

	"github.com/emersion/go-smtp"
)

// replyErr makes a failure found by the router itself (DNS, TLS policy,
// maildir) look like an SMTP reply, because a reply is what recipients,
// DSNs and `queue show` carry.
func replyErr(code, class, subject, detail int, msg string) *smtp.SMTPError {
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{class, subject, detail}, Message: msg}
}

// replyOf renders err as the one-line reply kept for a recipient. Errors
// that are not replies are connection trouble: 4.4.1 "no answer from
// host" (RFC 3463 §3.5).
func replyOf(err error) string {
	var se *smtp.SMTPError
	if !errors.As(err, &se) {
		return "451 4.4.1 " + oneLine(err.Error())
	}
	msg := oneLine(se.Message)
	if se.EnhancedCode == (smtp.EnhancedCode{}) || se.EnhancedCode == smtp.NoEnhancedCode {
		return fmt.Sprintf("%d %s", se.Code, msg)
	}
	e := se.EnhancedCode
	return fmt.Sprintf("%d %d.%d.%d %s", se.Code, e[0], e[1], e[2], msg)
}

// isPermanent reports whether err is a 5xx reply: the recipient fails for
// good (RFC 5321 §4.2.1). Everything else is worth another try.
func isPermanent(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code/100 == 5
}

// isReply reports whether err is a reply from the server that leaves the
// session usable: anything but 421, which announces that the server
// closes the connection (RFC 5321 §3.8).
func isReply(err error) bool {
	var se *smtp.SMTPError
	return errors.As(err, &se) && se.Code != 421
}

// oneLine joins the lines of a multi-line reply.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
