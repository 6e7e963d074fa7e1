package dmarc

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/resolver"
)

// The result words of a dmarc verdict. fail, quarantine and reject are all
// DMARC failures (dmarc=fail in Authentication-Results); the word says
// which disposition applies after pct, t and local overrides, so that
// [stage.results] can map each.
const (
	Pass       = "pass"       // an aligned SPF or DKIM pass
	None       = "none"       // no policy: no record, several records, no author domain, a trusted client
	Fail       = "fail"       // failed; disposition none (p=none, sampled out, trusted forwarder)
	Quarantine = "quarantine" // failed; the domain asks for quarantine
	Reject     = "reject"     // failed; the domain asks for rejection
	TempError  = "temperror"  // a DNS failure, or an authentication stage broke
	PermError  = "permerror"  // no single From field (RFC 7489 §6.6.1)
)

// Results returns the result words of a dmarc verdict.
func Results() []string {
	return []string{Pass, None, Fail, Quarantine, Reject, TempError, PermError}
}

// lookuper is the DNS client: the gateway's resolver, or a test double.
type lookuper interface {
	Lookup(ctx context.Context, name string, qtype uint16) (resolver.Answer, error)
}

// Filter is a configured dmarc stage.
type Filter struct {
	dns      lookuper
	org      OrgDomainer
	trusted  map[string]bool // trusted_arc_sealers
	sample   func() int      // a number in [0, 100) for pct sampling
	now      func() time.Time
	reporter recorder // nil unless reports = true
	stop     func()   // ends the daily report run
}

// recorder keeps an evaluation for the aggregate reports.
type recorder interface {
	Record(ev *Evaluation, tx *stages.Transaction, now time.Time) error
}

var _ stages.Filter = (*Filter)(nil)

// Info declares the DATA phase: the RFC5322.From field is known only then,
// and the spf, dkim and arc results of the stages before it are needed.
func (f *Filter) Info() stages.Info {
	return stages.Info{Kind: "dmarc", Version: "1", Phases: stages.Data,
		Needs: stages.NeedEnvelope | stages.NeedHeader | stages.NeedResults, Results: Results()}
}

// Close stops the daily report run.
func (f *Filter) Close() error {
	if f.stop != nil {
		f.stop()
	}
	return nil
}

// Evaluation is the DMARC outcome for one author domain, as the verdict
// and the aggregate report record it.
type Evaluation struct {
	Result       string       `json:"result"`
	HeaderFrom   string       `json:"header_from"`
	PolicyDomain string       `json:"policy_domain,omitempty"` // where the record was found
	Record       *Record      `json:"record,omitempty"`
	Policy       Policy       `json:"policy,omitempty"`      // p, sp or np: the one that applied
	PolicyTag    string       `json:"policy_tag,omitempty"`  // which: "p", "sp" or "np"
	Disposition  Policy       `json:"disposition,omitempty"` // after pct, t and overrides
	DKIMAligned  bool         `json:"dkim_aligned"`
	SPFAligned   bool         `json:"spf_aligned"`
	Override     string       `json:"override,omitempty"` // report PolicyOverrideType
	Comment      string       `json:"comment,omitempty"`
	Problem      string       `json:"problem,omitempty"`
	SPF          authResult   `json:"spf"`
	DKIM         []authResult `json:"dkim,omitempty"`
}

// Run evaluates DMARC for the message. Nothing about the message is an
// error: DNS failures are temperror, a broken From field permerror.
func (f *Filter) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if tx.Client.Trusted || tx.Client.AuthUser != "" {
		// Mail this gateway relays out for its own users is not mail it
		// receives: DMARC is a receiver's check (RFC 7489 §6.6).
		return verdict(&Evaluation{Result: None, Problem: "trusted client, not evaluated"}), nil
	}
	in := gatherInputs(tx)
	domains, err := authorDomains(tx.Header)
	if err != nil {
		return verdict(&Evaluation{Result: PermError, Problem: err.Error()}), nil
	}
	if len(domains) == 0 {
		// RFC 7489 §6.6.1: a From field without a domain (group
		// syntax) is typically ignored.
		return verdict(&Evaluation{Result: None, Problem: "From header field has no address"}), nil
	}
	var worst *Evaluation
	for _, d := range domains {
		ev := f.evaluate(ctx, d, in)
		if f.reporter != nil && ev.Record != nil && len(ev.Record.RUA) > 0 {
			if err := f.reporter.Record(ev, tx, f.now()); err != nil {
				// Losing a report row must not lose the message.
				ev.Comment = strings.TrimSpace(ev.Comment + " report not recorded: " + err.Error())
			}
		}
		if worst == nil || rank(ev.Result) > rank(worst.Result) {
			worst = ev
		}
	}
	return verdict(worst), nil
}

// rank orders result words for a From field with several domains: the
// strictest failing policy applies (RFC 7489 §6.6.1), and a domain with
// no policy says less than one that passed.
func rank(result string) int {
	switch result {
	case Reject:
		return 6
	case Quarantine:
		return 5
	case TempError:
		return 4
	case Fail:
		return 3
	case None:
		return 2
	case Pass:
		return 1
	}
	return 0
}

// evaluate checks one author domain (RFC 7489 §6.6.2-§6.6.4).
func (f *Filter) evaluate(ctx context.Context, from string, in inputs) *Evaluation {
	ev := &Evaluation{HeaderFrom: from, SPF: in.spf, DKIM: in.dkim}
	rec, policyDomain, err := f.discover(ctx, from)
	switch {
	case errors.Is(err, resolver.ErrTemporary):
		ev.Result, ev.Problem = TempError, err.Error()
		return ev
	case err != nil:
		ev.Result, ev.Problem = None, err.Error()
		return ev
	}
	ev.Record, ev.PolicyDomain = rec, policyDomain
	for _, d := range in.dkim {
		if d.Result == "pass" && f.aligned(from, d.Domain, rec.StrictDKIM) {
			ev.DKIMAligned = true
		}
	}
	// §3.1.2: SPF-authenticated identifier, the MAIL FROM domain (or
	// HELO for the null sender), aligned with aspf.
	ev.SPFAligned = in.spf.Result == "pass" && f.aligned(from, in.spf.Domain, rec.StrictSPF)
	if ev.DKIMAligned || ev.SPFAligned {
		ev.Result, ev.Policy, ev.Disposition = Pass, rec.Policy, PolicyNone
		return ev
	}
	if in.unchecked {
		// An spf or dkim stage broke: the missing result might have
		// been the aligned pass.
		ev.Result, ev.Problem = TempError, "an authentication stage failed; DMARC cannot be decided"
		return ev
	}
	ev.Policy, ev.PolicyTag = rec.Policy, "p"
	if policyDomain != from {
		// §6.6.3: a record found at the Organizational Domain gives
		// its subdomains sp=, and DMARCbis np= for names that do not
		// exist; each falls back to the one before.
		if rec.Subdomain != "" {
			ev.Policy, ev.PolicyTag = rec.Subdomain, "sp"
		}
		if rec.NonExist != "" {
			switch exists, err := f.exists(ctx, from); {
			case err != nil:
				ev.Result, ev.Problem = TempError, err.Error()
				return ev
			case !exists:
				ev.Policy, ev.PolicyTag = rec.NonExist, "np"
			}
		}
	}
	ev.Disposition = ev.Policy
	// §6.6.4 and §6.3 pct: failing mail outside the sample gets the next
	// policy down; DMARCbis t=y asks for the same as pct=0.
	pct := rec.Pct
	if rec.Testing {
		pct = 0
	}
	if ev.Disposition != PolicyNone && pct < 100 && f.sample() >= pct {
		ev.Disposition = ev.Disposition.weaker()
		ev.Override, ev.Comment = "sampled_out", fmt.Sprintf("pct=%d", pct)
		if rec.Testing {
			ev.Comment = "t=y"
		}
	}
	// RFC 8617 §7.2: a local policy may accept a DMARC failure when an
	// ARC chain that passes was sealed by a forwarder it trusts.
	if ev.Disposition != PolicyNone && in.arcPass && f.trusted[in.sealer] {
		ev.Disposition = PolicyNone
		ev.Override, ev.Comment = "trusted_forwarder", "arc=pass as.d="+in.sealer
	}
	switch ev.Disposition {
	case PolicyReject:
		ev.Result = Reject
	case PolicyQuarantine:
		ev.Result = Quarantine
	default:
		ev.Result = Fail
	}
	return ev
}

// aligned reports whether an authenticated domain is aligned with the
// From domain (RFC 7489 §3.1): in strict mode the names are identical, in
// relaxed mode their Organizational Domains are.
func (f *Filter) aligned(from, auth string, strict bool) bool {
	return aligned(f.org, from, auth, strict)
}

func aligned(org OrgDomainer, from, auth string, strict bool) bool {
	a, ok1 := canonicalDomain(from)
	b, ok2 := canonicalDomain(auth)
	if !ok1 || !ok2 {
		return false
	}
	if a == b {
		return true
	}
	if strict {
		return false
	}
	return orgOf(org, a) == orgOf(org, b)
}

// orgOf is the Organizational Domain of d, or d itself when d is a public
// suffix (then only d itself aligns with it).
func orgOf(org OrgDomainer, d string) string {
	if o, ok := org.OrgDomain(d); ok {
		return o
	}
	return d
}

// errNoRecord and errManyRecords end policy discovery with no policy.
var (
	errNoRecord    = errors.New("no DMARC record")
	errManyRecords = errors.New("several DMARC records")
)

// discover finds the policy record for an author domain (RFC 7489
// §6.6.3): at _dmarc.<domain>, else at _dmarc.<Organizational Domain>.
// It returns the record and the domain it was found at.
func (f *Filter) discover(ctx context.Context, domain string) (*Record, string, error) {
	texts, err := f.records(ctx, domain)
	if err != nil {
		return nil, "", err
	}
	at := domain
	if len(texts) == 0 {
		if org := orgOf(f.org, domain); org != domain {
			if texts, err = f.records(ctx, org); err != nil {
				return nil, "", err
			}
			at = org
		}
	}
	switch len(texts) {
	case 0:
		return nil, "", errNoRecord
	case 1:
	default:
		// Step 5: several records, no DMARC processing.
		return nil, "", fmt.Errorf("%w at _dmarc.%s", errManyRecords, at)
	}
	rec, err := ParseRecord(texts[0])
	if err != nil {
		// Step 6: an unusable record, no DMARC processing.
		return nil, "", fmt.Errorf("DMARC record at _dmarc.%s: %w", at, err)
	}
	return rec, at, nil
}

// records returns the TXT records at _dmarc.<domain> that start with the
// DMARC version tag; others are discarded (§6.6.3 steps 2 and 4).
func (f *Filter) records(ctx context.Context, domain string) ([]string, error) {
	a, err := f.dns.Lookup(ctx, "_dmarc."+domain, dns.TypeTXT)
	if err != nil {
		if errors.Is(err, resolver.ErrBadName) {
			return nil, nil
		}
		return nil, fmt.Errorf("DMARC record of %s: %w", domain, err)
	}
	var out []string
	for _, rr := range a.RRs {
		txt := strings.Join(resolver.TXTStrings(rr), "")
		if tags := splitTags(txt); len(tags) > 0 && strings.EqualFold(tags[0].name, "v") && tags[0].value == "DMARC1" {
			out = append(out, txt)
		}
	}
	return out, nil
}

// exists reports whether a domain exists for DMARCbis np=: a name with no
// A, AAAA or MX record (NXDOMAIN or no data for all three) does not.
func (f *Filter) exists(ctx context.Context, domain string) (bool, error) {
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA, dns.TypeMX} {
		a, err := f.dns.Lookup(ctx, domain, t)
		if err != nil {
			return false, fmt.Errorf("existence of %s: %w", domain, err)
		}
		if a.NXDomain() {
			return false, nil
		}
		if !a.Empty() {
			return true, nil
		}
	}
	return false, nil
}

// verdict turns an evaluation into the stage's verdict. The action is the
// default of the result word; [stage.results] maps any word to another.
// The reason is Authentication-Results resinfo (RFC 7489 §11.2, with
// DMARCbis's policy.dmarc, the disposition applied).
func verdict(ev *Evaluation) stages.Verdict {
	v := stages.Verdict{Result: ev.Result, Reason: reason(ev)}
	switch ev.Result {
	case Reject:
		v.Action = stages.Reject
	case Quarantine:
		v.Action = stages.Quarantine
	case PermError:
		// §6.6.1: messages with no From field, or several, are
		// "typically rejected": a second From is how a forger shows one
		// domain to the reader while DMARC checks another.
		v.Action = stages.Reject
	}
	switch ev.Result {
	case Reject, Quarantine:
		v.Reply = &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message refused by the DMARC policy of the From domain"}
	case PermError:
		v.Reply = &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Message needs exactly one From header field with an address"}
	case TempError:
		// For a mapping to tempfail; RFC 7489 §6.6.3 leaves it to the
		// receiver ("fail open" is the default here).
		v.Reply = &stages.Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "DMARC policy could not be checked, try again later"}
	}
	return v
}

// reason writes the evaluation as resinfo with stages/authres:
// "dmarc=fail reason=\"...\" header.from=example.com policy.dmarc=reject".
func reason(ev *Evaluation) string {
	r := authres.Result{Method: "dmarc", Value: ev.Result, Props: []authres.Prop{{Key: "header.from", Value: ev.HeaderFrom}}}
	switch r.Value {
	case Fail, Quarantine, Reject:
		r.Value = "fail"
		if ev.Disposition != "" {
			r.Props = append(r.Props, authres.Prop{Key: "policy.dmarc", Value: string(ev.Disposition)})
		}
	}
	var why []string
	if ev.Record != nil && r.Value != "pass" {
		p := "p=" + string(ev.Policy)
		if ev.PolicyTag != "" {
			p = ev.PolicyTag + "=" + string(ev.Policy)
		}
		if ev.PolicyDomain != ev.HeaderFrom {
			p += " at " + ev.PolicyDomain
		}
		why = append(why, p)
	}
	if ev.Override != "" {
		why = append(why, ev.Override+": "+ev.Comment)
	}
	if ev.Problem != "" {
		why = append(why, ev.Problem)
	}
	r.Reason = strings.Join(why, ", ")
	return authres.Format(r)
}
