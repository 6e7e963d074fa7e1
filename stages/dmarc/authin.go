package dmarc

import (
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/authres"
)

// inputs are the authentication results of earlier stages that DMARC
// builds on (RFC 7489 §4.2): the SPF result of the identity SPF checked,
// each DKIM signature's result, and whether an ARC chain passed.
type inputs struct {
	spf       authResult   // the RFC5321.MailFrom (or HELO) result; Result "" if no spf stage ran
	dkim      []authResult // one per signature
	arcPass   bool
	sealer    string // d= of the newest ARC-Seal when arcPass
	unchecked bool   // an spf or dkim stage broke (on_error applied): a fail may be unfounded
}

// authResult is one identity's result: an SPF domain and scope, or a DKIM
// signature's d= and s=.
type authResult struct {
	Result   string `json:"result"`
	Domain   string `json:"domain"`
	Selector string `json:"selector,omitempty"` // DKIM
	Scope    string `json:"scope,omitempty"`    // SPF: "mfrom" or "helo"
}

// gatherInputs reads tx.Results; the reasons are resinfo, read with
// stages/authres. spf writes the identity it checked first
// ("spf=pass smtp.mailfrom=example.com", or smtp.helo for the null
// sender); dkim writes one entry per signature
// ("dkim=pass header.d=example.com header.s=sel header.b=abc"); arc's
// result word is the chain's cv. A stage that runs in several phases (spf
// at MAIL and DATA) reports each time: the last result counts.
func gatherInputs(tx *stages.Transaction) inputs {
	var in inputs
	for _, r := range tx.Results {
		kind := strings.ToLower(r.Kind)
		if r.Errored {
			if kind == "spf" || kind == "dkim" {
				in.unchecked = true
			}
			continue
		}
		switch kind {
		case "spf":
			in.spf = spfInput(r, tx)
		case "dkim":
			in.dkim = nil
			// The entries before one that does not parse still count.
			entries, _ := authres.ParseResults(r.Reason)
			for _, e := range entries {
				if e.Method != "dkim" {
					continue
				}
				d := address.Fold(e.Get("header.d"))
				if d == "" {
					continue
				}
				in.dkim = append(in.dkim, authResult{Result: e.Value, Domain: d, Selector: e.Get("header.s")})
			}
		case "arc":
			in.arcPass = strings.EqualFold(r.Result, "pass")
		}
	}
	if in.arcPass {
		in.sealer = newestSealer(tx.Header)
	}
	return in
}

// spfInput is the SPF result of the identity DMARC uses (RFC 7489 §4.1,
// §3.1.2): MAIL FROM's domain, or the HELO name for the null sender (RFC
// 7208 §2.4). The reason names it; the envelope is the fallback.
func spfInput(r stages.Result, tx *stages.Transaction) authResult {
	a := authResult{Result: strings.ToLower(r.Result), Scope: "mfrom"}
	entries, _ := authres.ParseResults(r.Reason)
	for _, e := range entries {
		if e.Method != "spf" {
			continue
		}
		if v := e.Get("smtp.mailfrom"); v != "" {
			if _, d, ok := address.Split(v); ok {
				v = d
			}
			a.Domain = address.Fold(v)
		} else if v := e.Get("smtp.helo"); v != "" {
			a.Domain, a.Scope = address.Fold(v), "helo"
		}
		break // the first entry is the identity checked; a second is the HELO check
	}
	if a.Domain == "" {
		if d := address.DomainOf(tx.From); d != "" {
			a.Domain = d
		} else if tx.Client.Helo != "" {
			a.Domain, a.Scope = address.Fold(tx.Client.Helo), "helo"
		}
	}
	return a
}

// newestSealer returns the d= of the ARC-Seal with the highest instance:
// the hop that handed the message to us. Only that sealer vouches for
// what arrived; an older trusted sealer in a chain that still validates
// proves nothing about changes made after it (RFC 8617 §5.2: older
// ARC-Message-Signatures need not verify for cv=pass).
func newestSealer(h stages.Header) string {
	best, sealer := 0, ""
	for _, v := range h.Values("ARC-Seal") {
		var inst int
		var d string
		for _, t := range splitTags(v) {
			switch strings.ToLower(t.name) {
			case "i":
				inst, _ = strconv.Atoi(t.value)
			case "d":
				d = address.Fold(t.value)
			}
		}
		if inst > best {
			best, sealer = inst, d
		}
	}
	return sealer
}
