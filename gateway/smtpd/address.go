package smtpd

import (
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// badAddress says why an address of MAIL FROM or RCPT TO cannot be taken,
// or returns "". addr is what go-smtp parsed: a quoted local part comes
// without its quotes and escapes, and the domain is whatever followed the
// "@" (go-smtp checks neither). The local part is what precedes the last
// "@", as for the router, which quotes it again when it must.
func badAddress(addr string, trusted bool) string {
	for i := 0; i < len(addr); i++ {
		// Nothing in a mailbox may be a control character, and a space
		// only inside quotes, which no mail we relay needs; either would
		// end up in header fields (Received "for") and in the commands
		// the router sends.
		if c := addr[i]; c <= ' ' || c == 0x7f {
			return "control character or space in address"
		}
	}
	at := strings.LastIndexByte(addr, '@')
	if at <= 0 || at == len(addr)-1 {
		return "address without local part or domain"
	}
	if !validDomain(addr[at+1:]) {
		return "domain is not a host name or address literal"
	}
	// "@", "%" and "!" in a local part ask the next hop to relay further:
	// source routes, the percent hack and UUCP paths. RFC 5321 §3.6
	// leaves honouring them to us, and we do not for untrusted clients:
	// an internal server that does would make the gateway a relay.
	if !trusted && strings.ContainsAny(addr[:at], "@%!") {
		return "source route or percent hack in local part"
	}
	return ""
}

// validDomain reports whether d is a host name (LDH labels, RFC 5321
// §4.1.2; U-labels in their IDNA form, RFC 6531 §3.3), with or without a
// trailing dot, or an address literal (§4.1.3). Whether non-ASCII is
// allowed at all is SMTPUTF8's business, checked before.
func validDomain(d string) bool {
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		lit := d[1 : len(d)-1]
		if v6, ok := strings.CutPrefix(lit, "IPv6:"); ok {
			a, err := netip.ParseAddr(v6)
			return err == nil && a.Is6() && a.Zone() == ""
		}
		a, err := netip.ParseAddr(lit)
		return err == nil && a.Is4()
	}
	if !isASCII(d) {
		var err error
		if d, err = idna.Lookup.ToASCII(d); err != nil {
			return false
		}
	}
	return isHostname(strings.TrimSuffix(d, "."))
}

// isHostname reports whether d is dot-separated LDH labels (RFC 1035
// §2.3.1, with leading digits as RFC 1123 §2.1 allows).
func isHostname(d string) bool {
	if d == "" || len(d) > 253 {
		return false
	}
	for label := range strings.SplitSeq(d, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// CheckAddress says what the SMTP side answers to MAIL FROM (rcpt false) or
// RCPT TO (rcpt true) with addr, if it refuses its syntax: the reply and the
// reason for the log. Both are "" for an address it takes. `mailgate test`
// uses it to answer as the SMTP side would.
func CheckAddress(addr string, trusted, rcpt bool) (reply, reason string) {
	why := badAddress(addr, trusted)
	switch {
	case why == "":
		return "", ""
	case rcpt:
		return replyText(errBadRcpt), why
	default:
		return replyText(errBadSender), why
	}
}
