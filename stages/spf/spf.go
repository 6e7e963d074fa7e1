package spf

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/resolver"
)

// maxReplyText bounds the part of a reply taken from an explanation, which
// the domain's owner wrote, to keep the reply line short (RFC 5321 §4.5.3.1.5).
const maxReplyText = 200

// Filter is a configured spf stage.
type Filter struct {
	dns       *resolver.Resolver
	hostname  string
	checkHelo bool
	scores    map[Result]float64
	memo      *memo
}

var _ stages.Filter = (*Filter)(nil)

// Info declares the MAIL phase, where the check runs, and the DATA phase,
// the only one where header edits are allowed.
func (f *Filter) Info() stages.Info {
	return stages.Info{Kind: "spf", Version: "1", Phases: stages.Mail | stages.Data, Needs: stages.NeedEnvelope, Edits: true, Results: Results()}
}

// evaluation is the SPF outcome of one transaction.
type evaluation struct {
	identity string // "mailfrom", or "helo" for the null sender (§2.4)
	sender   string // the address checked: MAIL FROM or postmaster@<helo>
	domain   string // its domain
	heloName string
	out      Outcome
	helo     *Outcome // the HELO identity's outcome, when checked separately
}

// Run checks at MAIL and adds Received-SPF at DATA. SPF problems, DNS
// failures included, are results (temperror, permerror), never errors.
// The action is always continue: the result scores, and [stage.results]
// maps it to another action, with the reply below.
func (f *Filter) Run(ctx context.Context, p stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	ev := f.evaluate(ctx, tx)
	v := stages.Verdict{Result: string(ev.out.Result), Reason: ev.reason()}
	switch p {
	case stages.Mail:
		v.Score = f.scores[ev.out.Result]
		v.Reply = ev.reply(tx.Client.Addr)
	case stages.Data:
		// The score was given at MAIL; DATA only records the result.
		v.Edits = []stages.Edit{{Op: stages.HeaderInsert, Name: "Received-SPF", Value: f.receivedSPF(ev, tx)}}
	}
	return v, nil
}

// evaluate checks the transaction's identities, or returns what the MAIL
// phase found for the same client, HELO and sender.
func (f *Filter) evaluate(ctx context.Context, tx *stages.Transaction) evaluation {
	ip, helo := tx.Client.Addr.Unmap(), tx.Client.Helo
	key := ip.String() + "\x00" + helo + "\x00" + tx.From
	now := time.Now()
	if ev, ok := f.memo.get(key, now); ok {
		return ev
	}
	ev := evaluation{identity: "mailfrom", sender: tx.From, heloName: helo}
	if tx.From == "" {
		// §2.4: for the null sender, check postmaster@<HELO>.
		ev.identity, ev.sender = "helo", "postmaster@"+helo
	}
	_, domain, _ := address.Split(ev.sender)
	ev.domain = address.Fold(domain)
	if !ip.IsValid() {
		ev.out = Outcome{Result: None, Problem: "client address unknown"}
		return ev
	}
	ev.out = check(ctx, f.dns, ip, ev.sender, helo, f.hostname, now)
	if f.checkHelo && tx.From != "" {
		h := check(ctx, f.dns, ip, "postmaster@"+helo, helo, f.hostname, now)
		ev.helo = &h
	}
	f.memo.put(key, ev, now)
	return ev
}

// reason is the detail for logs and for the headers stage, written as
// Authentication-Results resinfo (RFC 8601 §2.7.2) by stages/authres: the
// MAIL FROM result first, then the HELO one when checked, each with its
// problem as the reason: "spf=fail smtp.mailfrom=example.com;
// spf=permerror reason=\"...\" smtp.helo=mx.example.com". authres quotes
// and escapes what needs it and drops control characters, so a problem
// quoting the sender's DNS cannot break the entry.
func (ev evaluation) reason() string {
	key := "smtp.mailfrom"
	if ev.identity == "helo" {
		key = "smtp.helo"
	}
	entries := []authres.Result{authResult(ev.out, key, ev.domain)}
	if ev.helo != nil {
		entries = append(entries, authResult(*ev.helo, "smtp.helo", ev.heloName))
	}
	return authres.Format(entries...)
}

// authResult is o as an Authentication-Results entry for the identity
// name, a HELO name (key smtp.helo) or the MAIL FROM domain (smtp.mailfrom).
func authResult(o Outcome, key, name string) authres.Result {
	return authres.Result{Method: "spf", Value: string(o.Result), Reason: o.Problem, Props: []authres.Prop{{Key: key, Value: name}}}
}

// reply is the SMTP reply for a result an admin maps to reject or
// tempfail, with the enhanced codes of RFC 7372 §3.2: X.7.23 for a failed
// check, X.7.24 for an error while checking. Its class is the one the
// result calls for, 4xx for temperror (RFC 7208 §8.6), 5xx for the
// others; the pipeline changes it to that of the action mapped. A pass
// has none: refusing it is the admin's own idea, with the policy's reply.
// The explanation of a fail is the only text the domain's owner
// contributes, sanitised to one short line.
func (ev evaluation) reply(ip netip.Addr) *stages.Reply {
	r := &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 23}}
	domain := replyText(ev.domain)
	switch ev.out.Result {
	case Pass:
		return nil
	case Fail:
		if ev.out.Explanation != "" {
			r.Text = "SPF fail: " + replyText(ev.out.Explanation)
		} else {
			r.Text = fmt.Sprintf("SPF fail: %s does not designate %s as permitted sender", domain, ip.Unmap())
		}
	case PermError, TempError:
		r.Enhanced[2] = 24
		if ev.out.Result == TempError {
			r.Code, r.Enhanced[0] = 451, 4
		}
		r.Text = fmt.Sprintf("SPF %s: the SPF policy of %s could not be evaluated", ev.out.Result, domain)
	default:
		r.Text = fmt.Sprintf("SPF %s: %s does not designate %s as permitted sender", ev.out.Result, domain, ip.Unmap())
	}
	return r
}

// receivedSPF writes the Received-SPF field (RFC 7208 §9.1).
func (f *Filter) receivedSPF(ev evaluation, tx *stages.Transaction) string {
	ip := tx.Client.Addr.Unmap()
	who := f.hostname
	if who == "" {
		who = "unknown"
	}
	var comment string
	switch ev.out.Result {
	case Pass:
		comment = fmt.Sprintf("domain of %s designates %s as permitted sender", ev.sender, ip)
	case Fail:
		comment = fmt.Sprintf("domain of %s does not designate %s as permitted sender", ev.sender, ip)
	case SoftFail:
		comment = fmt.Sprintf("domain of transitioning %s does not designate %s as permitted sender", ev.sender, ip)
	case Neutral:
		comment = fmt.Sprintf("%s is neither permitted nor denied by domain of %s", ip, ev.sender)
	case None:
		comment = fmt.Sprintf("domain of %s does not designate permitted sender hosts", ev.sender)
	case TempError:
		comment = fmt.Sprintf("temporary error in processing during lookup of %s", ev.sender)
	case PermError:
		comment = fmt.Sprintf("permanent error in processing during lookup of %s", ev.sender)
	}
	kv := []string{
		"client-ip=" + kvValue(ip.String()),
		"envelope-from=" + kvValue(tx.From),
		"helo=" + kvValue(tx.Client.Helo),
		"receiver=" + kvValue(who),
		"identity=" + ev.identity,
	}
	if ev.out.Mechanism != "" {
		kv = append(kv, "mechanism="+kvValue(ev.out.Mechanism))
	}
	if ev.out.Problem != "" && (ev.out.Result == PermError || ev.out.Result == TempError) {
		kv = append(kv, "problem="+kvValue(ev.out.Problem))
	}
	return fmt.Sprintf("%s (%s: %s) %s;", ev.out.Result, commentText(who), commentText(comment), strings.Join(kv, "; "))
}

// kvValue writes a value as an RFC 5322 dot-atom when it is one, else as a
// quoted-string (RFC 7208 §9.1). Control characters are dropped so that
// the field stays one line.
func kvValue(s string) string {
	if isDotAtom(s) {
		return s
	}
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range clean(s) {
		if r == '"' || r == '\\' {
			b.WriteByte('\\')
		}
		b.WriteRune(r)
	}
	b.WriteByte('"')
	return b.String()
}

func isDotAtom(s string) bool {
	if s == "" || s[0] == '.' || s[len(s)-1] == '.' || strings.Contains(s, "..") {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isAlnum(c) && c != '.' && !strings.ContainsRune("!#$%&'*+-/=?^_`{|}~", rune(c)) {
			return false
		}
	}
	return true
}

// commentText makes s safe inside an RFC 5322 comment: no parentheses or
// backslashes to unbalance it, no control characters.
func commentText(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '(' || r == ')' || r == '\\' {
			return -1
		}
		return r
	}, clean(s))
}

// clean drops control characters and invalid UTF-8 (header fields may carry
// UTF-8, RFC 6532, but never a bare CR or LF).
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f || r == utf8.RuneError || (r >= 0x80 && r < 0xa0) {
			return -1
		}
		return r
	}, s)
}

// replyText keeps printable US-ASCII of s, at most maxReplyText bytes: an
// SMTP reply is 7-bit text on one line.
func replyText(s string) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < maxReplyText; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b.WriteByte(c)
		}
	}
	return strings.TrimSpace(b.String())
}
