package smtpd

import (
	"strings"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/stages/address"
)

// envelopeAddress checks an address of MAIL FROM or RCPT TO and returns it
// in the canonical form every later step compares (address.Parse: the
// domain lower-cased, without root dot, in A-labels), or the reply that
// refuses it and why: errNeedUTF8 for a non-ASCII address without
// SMTPUTF8 (utf8), else bad. addr is what go-smtp parsed: a quoted local
// part comes without its quotes and escapes, and the domain is whatever
// followed the last "@" (go-smtp checks neither); the router quotes the
// local part again when it must.
func envelopeAddress(addr string, trusted, utf8 bool, bad *smtp.SMTPError) (canon string, r *smtp.SMTPError, why string) {
	if !utf8 && !address.IsASCII(addr) {
		return "", errNeedUTF8, "non-ASCII address without SMTPUTF8"
	}
	if address.HasControlOrSpace(addr) {
		return "", bad, "control character or space in address"
	}
	canon, err := address.Parse(addr)
	if err != nil {
		return "", bad, err.Error()
	}
	// "@", "%" and "!" in a local part ask the next hop to relay further:
	// source routes, the percent hack and UUCP paths. RFC 5321 §3.6
	// leaves honouring them to us, and we do not for untrusted clients:
	// an internal server that does would make the gateway a relay.
	if local, _, _ := address.Split(canon); !trusted && strings.ContainsAny(local, "@%!") {
		return "", bad, "source route or percent hack in local part"
	}
	return canon, nil, ""
}
