package smtpd

import (
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// envelopeAddress checks an address of MAIL FROM or RCPT TO and returns it
// in the canonical form every later step compares (address.Parse: the
// domain lower-cased, without root dot, in A-labels), or why it cannot be
// taken. addr is what go-smtp parsed: a quoted local part comes without its
// quotes and escapes, and the domain is whatever followed the last "@"
// (go-smtp checks neither); the router quotes the local part again when it
// must.
func envelopeAddress(addr string, trusted bool) (canon, why string) {
	for i := 0; i < len(addr); i++ {
		// Nothing in a mailbox may be a control character, and a space
		// only inside quotes, which no mail we relay needs; either would
		// end up in header fields (Received "for") and in the commands
		// the router sends.
		if c := addr[i]; c <= ' ' || c == 0x7f {
			return "", "control character or space in address"
		}
	}
	canon, err := address.Parse(addr)
	if err != nil {
		return "", err.Error()
	}
	// "@", "%" and "!" in a local part ask the next hop to relay further:
	// source routes, the percent hack and UUCP paths. RFC 5321 §3.6
	// leaves honouring them to us, and we do not for untrusted clients:
	// an internal server that does would make the gateway a relay.
	if local, _, _ := address.Split(canon); !trusted && strings.ContainsAny(local, "@%!") {
		return "", "source route or percent hack in local part"
	}
	return canon, ""
}

// CheckAddress says what the SMTP side makes of addr in MAIL FROM (rcpt
// false) or RCPT TO (rcpt true): the canonical form it goes on with, or the
// reply it refuses the syntax with and the reason for the log. `mailgate
// test` uses it to answer as the SMTP side would.
func CheckAddress(addr string, trusted, rcpt bool) (canon, reply, reason string) {
	canon, why := envelopeAddress(addr, trusted)
	switch {
	case why == "":
		return canon, "", ""
	case rcpt:
		return "", replyText(errBadRcpt), why
	default:
		return "", replyText(errBadSender), why
	}
}
