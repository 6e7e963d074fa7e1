// Package dnsbl is the DNS list kind: at connect it looks the client
// address up in DNS block- and allow-lists (RFC 5782 §2.1 for IPv4, §2.4
// for IPv6), at MAIL FROM the envelope sender's domain, and optionally the
// HELO name, in domain lists (RHSBLs, §2.2). All lists of a phase are asked
// at once. Each listing adds its list's weight to the score (negative for
// allow-lists) and may ask for an action of its own. A list that times out
// or answers something that is not a listing code is skipped and logged,
// unless it is marked fail_closed.
package dnsbl

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/internal/dnslist"
	"github.com/mailgate/mailgate/stages/resolver"
)

// List types.
const (
	typeIP     = "ip"
	typeDomain = "domain"
)

// list is a configured DNS list.
type list struct {
	zone       string
	kind       string // typeIP or typeDomain
	helo       bool
	weight     float64
	codes      dnslist.Codes
	labels     []label
	action     stages.Action
	reply      string
	failClosed bool
}

// label names the answers of a range in the reason.
type label struct {
	r    [2]uint32
	text string
}

// DNSBL is a configured dnsbl stage.
type DNSBL struct {
	lists    []*list
	resolver *resolver.Resolver
}

var _ stages.Filter = (*DNSBL)(nil)

// Info declares connect when there are IP lists and mail when there are
// domain lists. The stage needs the envelope alone and never edits.
func (f *DNSBL) Info() stages.Info {
	var ph stages.Phase
	for _, l := range f.lists {
		if l.kind == typeIP {
			ph |= stages.Connect
		} else {
			ph |= stages.Mail
		}
	}
	return stages.Info{Kind: "dnsbl", Version: "1", Phases: ph, Needs: stages.NeedEnvelope, Results: Results()}
}

// Results are the result words of the kind's verdicts.
func Results() []string { return []string{"listed", "allowed", "clean"} }

// query is one lookup of one subject (an address or a domain) in one list.
type query struct {
	l       *list
	subject string
	name    string       // the DNS name asked
	listed  []netip.Addr // the answers that count
	err     error
}

// Run looks the client address (connect) or the sender domain and HELO
// name (mail) up in the lists of that phase. Its error return is for a
// fail_closed list that could not be asked.
func (f *DNSBL) Run(ctx context.Context, p stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	var qs []*query
	switch p {
	case stages.Connect:
		ip := tx.Client.Addr.Unmap()
		if !ip.IsValid() {
			return stages.Verdict{Result: "clean", Reason: "no client address to look up"}, nil
		}
		rev := reverse(ip)
		for _, l := range f.lists {
			if l.kind == typeIP {
				qs = append(qs, &query{l: l, subject: ip.String(), name: rev + "." + l.zone})
			}
		}
	case stages.Mail:
		sender := lookupDomain(tx.From)
		helo := lookupDomain(tx.Client.Helo)
		for _, l := range f.lists {
			if l.kind != typeDomain {
				continue
			}
			if sender != "" {
				qs = append(qs, &query{l: l, subject: sender, name: sender + "." + l.zone})
			}
			if l.helo && helo != "" && helo != sender {
				qs = append(qs, &query{l: l, subject: helo, name: helo + "." + l.zone})
			}
		}
	}

	// A list that does not answer is skipped (fail open), so the lookups
	// must give up before the stage's own deadline does: past it the
	// stage's on_error would apply to every list at once.
	lctx := ctx
	if d, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		lctx, cancel = context.WithDeadline(ctx, d.Add(-time.Until(d)/10))
		defer cancel()
	}
	var wg sync.WaitGroup
	for _, q := range qs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			q.listed, q.err = f.lookup(lctx, q.l, q.name)
		}()
	}
	wg.Wait()
	return f.verdict(tx, qs)
}

// lookup returns the answers for name that count as listed in l.
func (f *DNSBL) lookup(ctx context.Context, l *list, name string) ([]netip.Addr, error) {
	a, err := f.resolver.Lookup(ctx, name, dns.TypeA)
	if errors.Is(err, resolver.ErrBadName) {
		return nil, nil // too long for DNS, so in no list
	}
	if err != nil {
		return nil, err
	}
	return l.codes.Listed(a.RRs)
}

func (f *DNSBL) verdict(tx *stages.Transaction, qs []*query) (stages.Verdict, error) {
	var v stages.Verdict
	var hits, skipped []string
	var listed, allowed, accept bool
	// replyFrom is the list whose reply the verdict carries: the one that
	// asked for the strongest action, else the first block-list that
	// listed, so that [stage.results] listed = "reject" refuses with a
	// list's words rather than the policy's.
	var replyFrom, first *query
	for _, q := range qs {
		if q.err != nil {
			if q.l.failClosed {
				return stages.Verdict{}, fmt.Errorf("%s: %w", q.l.zone, q.err)
			}
			slog.Warn("dnsbl: list skipped", "queue_id", tx.QueueID, "list", q.l.zone, "query", q.name, "err", q.err)
			skipped = append(skipped, fmt.Sprintf("skipped %s: %v", q.l.zone, q.err))
			continue
		}
		if len(q.listed) == 0 {
			continue
		}
		v.Score += q.l.weight
		hits = append(hits, q.describe())
		if q.l.weight < 0 || q.l.action == stages.Accept {
			allowed = true
		} else {
			listed = true
			if first == nil {
				first = q
			}
		}
		switch a := q.l.action; {
		case a == stages.Accept:
			accept = true
		case a > v.Action:
			v.Action, replyFrom = a, q
		}
	}
	switch {
	case listed:
		v.Result = "listed"
	case allowed:
		v.Result = "allowed"
	default:
		v.Result = "clean"
	}
	if replyFrom == nil {
		replyFrom = first
	}
	if accept {
		// An allow-list trusted enough to accept outranks the block-lists
		// of the same stage: that is what the admin asked it to do.
		v.Action, replyFrom = stages.Accept, nil
	}
	if replyFrom != nil {
		v.Reply = replyFrom.reply(tx)
	}
	v.Reason = strings.Join(append(hits, skipped...), "; ")
	return v, nil
}

// describe renders a listing for the reason: "zen.example=127.0.0.2 (SBL)",
// or "dbl.example(sender.example)=127.0.1.2" for a domain list.
func (q *query) describe() string {
	var b strings.Builder
	b.WriteString(q.l.zone)
	if q.l.kind == typeDomain {
		b.WriteString("(" + q.subject + ")")
	}
	b.WriteByte('=')
	var labels []string
	for i, ip := range q.listed {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(ip.String())
		v := dnslist.U32(ip)
		for _, l := range q.l.labels {
			if v >= l.r[0] && v <= l.r[1] {
				labels = append(labels, l.text)
				break
			}
		}
	}
	if len(labels) > 0 {
		b.WriteString(" (" + strings.Join(labels, ",") + ")")
	}
	return b.String()
}

// reply is the SMTP reply of a listing, for a reject or tempfail that the
// list asked for or that [stage.results] maps listed to: generic text or
// the list's own, with {ip}, {domain} and {zone} filled in. The values are
// an address as netip prints it and names checked by lookupDomain, so a client
// cannot put anything of its own making on the wire.
func (q *query) reply(tx *stages.Transaction) *stages.Reply {
	r := &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}}
	if q.l.action == stages.TempFail {
		r.Code, r.Enhanced = 451, [3]int{4, 7, 1}
	}
	text := q.l.reply
	if text == "" {
		text = "Client host blocked"
		if q.l.kind == typeDomain {
			text = "Sender domain blocked"
		}
	}
	ip, domain := "", ""
	if tx.Client.Addr.IsValid() {
		ip = tx.Client.Addr.Unmap().String()
	}
	if q.l.kind == typeDomain {
		domain = q.subject
	}
	r.Text = strings.NewReplacer("{ip}", ip, "{domain}", domain, "{zone}", q.l.zone).Replace(text)
	return r
}

// reverse writes an address as a DNS list wants it before the zone: the
// octets of IPv4 in reverse order (RFC 5782 §2.1), the 32 nibbles of IPv6
// in reverse order (§2.4).
func reverse(ip netip.Addr) string {
	if ip.Is4() {
		b := ip.As4()
		return fmt.Sprintf("%d.%d.%d.%d", b[3], b[2], b[1], b[0])
	}
	const hex = "0123456789abcdef"
	b := ip.As16()
	out := make([]byte, 0, 63)
	for i := len(b) - 1; i >= 0; i-- {
		if len(out) > 0 {
			out = append(out, '.')
		}
		out = append(out, hex[b[i]&0xf], '.', hex[b[i]>>4])
	}
	return string(out)
}

// lookupDomain returns the domain to look up for an address
// ("user@Example.COM." gives "example.com") or a HELO name: its canonical
// form (package address: lower case, no root dot, A-labels); "" for the
// null sender, address literals and IP addresses, dotless names and
// anything that is not a domain name, none of which a domain list lists.
func lookupDomain(s string) string {
	if _, d, ok := address.Split(s); ok {
		s = d
	}
	d, err := address.Domain(s)
	if err != nil || strings.HasPrefix(d, "[") || !strings.Contains(d, ".") {
		return ""
	}
	if _, err := netip.ParseAddr(d); err == nil {
		return ""
	}
	return d
}
