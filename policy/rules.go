package policy

import (
	"net/netip"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// DefaultName is the Name of the Effective policy of a recipient that no
// override matches.
const DefaultName = "default"

// Effective is the policy that applies to one recipient: [policy] with the
// [[policy.override]] that matches the recipient, if any, laid over it.
type Effective struct {
	Name            string // DefaultName or the override's name; see SamePolicy
	TagScore        float64
	QuarantineScore float64
	RejectScore     float64
	SubjectTag      string         // "" for none
	TagHeaders      []stages.Field // added to a tagged message
	results         map[string]map[string]string
}

// SamePolicy reports whether a and b are the same policy. A message has one
// policy: its thresholds, tags and result mappings apply to the message as
// a whole, so recipients with different policies cannot share it.
func SamePolicy(a, b Effective) bool { return a.Name == b.Name }

// Result returns the action the override maps a stage's result word to.
// The stage's own [stage.results] are the pipeline's business: they hold
// for every recipient.
func (e Effective) Result(stage, result string) (stages.Action, bool) {
	if result == "" {
		return 0, false
	}
	word, ok := e.results[stage][result]
	if !ok {
		return 0, false
	}
	return parseResultAction(word)
}

// Default returns the policy of a recipient no override matches.
func (p *Policy) Default() Effective {
	return Effective{
		Name:            DefaultName,
		TagScore:        p.TagScore,
		QuarantineScore: p.QuarantineScore,
		RejectScore:     p.RejectScore,
		SubjectTag:      p.SubjectTag,
		TagHeaders:      fields(p.TagHeaders),
	}
}

// For returns the policy of recipient rcpt. An override listing the
// address wins; then one listing its domain exactly; then the one with the
// longest "*.suffix" of the domain; else the default. Addresses and domains
// compare as the address package has them (address.Equal, address.Fold):
// domains without case, root dot or U-labels, local parts without regard
// to ASCII case (RFC 5321 §2.4: they should be treated as case-insensitive
// in practice; see address.Key).
func (p *Policy) For(rcpt string) Effective {
	if i := p.match(rcpt); i >= 0 {
		return p.override(i)
	}
	return p.Default()
}

// match returns the index of the override for rcpt, or -1.
func (p *Policy) match(rcpt string) int {
	for i, o := range p.Overrides {
		for _, r := range o.Rcpts {
			if address.Equal(r, rcpt) {
				return i
			}
		}
	}
	domain := address.DomainOf(rcpt)
	if domain == "" {
		return -1
	}
	best, bestLen := -1, 0
	for i, o := range p.Overrides {
		for _, d := range o.Domains {
			d = address.Fold(d)
			switch {
			case d == domain:
				return i
			case address.Match(d, domain) && len(d) > bestLen:
				best, bestLen = i, len(d)
			}
		}
	}
	return best
}

// All returns the default policy and that of every override, in config
// order.
func (p *Policy) All() []Effective {
	all := []Effective{p.Default()}
	for i := range p.Overrides {
		all = append(all, p.override(i))
	}
	return all
}

func (p *Policy) override(i int) Effective {
	o := &p.Overrides[i]
	e := p.Default()
	e.Name = o.name()
	set := func(v *float64, o float64) {
		if o != 0 {
			*v = o
		}
	}
	set(&e.TagScore, o.TagScore)
	set(&e.QuarantineScore, o.QuarantineScore)
	set(&e.RejectScore, o.RejectScore)
	if o.SubjectTag != nil {
		e.SubjectTag = *o.SubjectTag
	}
	if o.TagHeaders != nil {
		e.TagHeaders = fields(o.TagHeaders)
	}
	e.results = o.Results
	return e
}

// name is the override's name, or its first address or domain.
func (o *Override) name() string {
	switch {
	case o.Name != "":
		return o.Name
	case len(o.Rcpts) > 0:
		return address.Key(o.Rcpts[0])
	case len(o.Domains) > 0:
		return address.Fold(o.Domains[0])
	}
	return ""
}

// ResultActions returns [stage.results] with the actions parsed, for the
// pipeline. Words Validate refused are left out.
func (s StageConfig) ResultActions() map[string]stages.Action {
	if len(s.Results) == 0 {
		return nil
	}
	m := make(map[string]stages.Action, len(s.Results))
	for result, word := range s.Results {
		if a, ok := parseResultAction(word); ok {
			m[result] = a
		}
	}
	return m
}

// resultActions are the actions a result may map to. Accept is not one: an
// exemption is written in [policy.allow], where it is checked before any
// stage runs, rather than depending on a stage's result word.
var resultActions = []string{"continue", "tag", "quarantine", "tempfail", "reject"}

func parseResultAction(word string) (stages.Action, bool) {
	a, err := stages.ParseAction(word)
	return a, err == nil && a != stages.Accept
}

// fields splits "Name: value" header lines. The loader has checked them.
func fields(lines []string) []stages.Field {
	if len(lines) == 0 {
		return nil
	}
	fs := make([]stages.Field, len(lines))
	for i, l := range lines {
		name, value, _ := strings.Cut(l, ":")
		fs[i] = stages.Field{Name: strings.TrimSpace(name), Value: strings.TrimSpace(value)}
	}
	return fs
}

// Hit is an entry of an allow- or block-list that matched.
type Hit struct {
	Key   string // the list key: client_ips, helos, senders or rcpts
	Entry string // the entry as loaded: in canonical form (see Validate)
	Value string // what it matched: the client address, HELO name, sender or recipient
}

// Match returns the first entry of l that matches what phase ph adds to
// tx: the client address at connect, the HELO name at helo, the sender at
// mail, the recipient being added (the last of tx.Rcpts) at rcpt. Nothing
// matches at data, nor the null sender.
func (l *List) Match(ph stages.Phase, tx *stages.Transaction) (Hit, bool) {
	var (
		key     string
		entries []string
		value   string
		match   func(entry, value string) bool
	)
	switch ph {
	case stages.Connect:
		if !tx.Client.Addr.IsValid() {
			return Hit{}, false
		}
		key, entries, value, match = "client_ips", l.ClientIPs, tx.Client.Addr.Unmap().String(), ipMatch
	case stages.Helo:
		key, entries, value, match = "helos", l.Helos, tx.Client.Helo, heloMatch
	case stages.Mail:
		key, entries, value, match = "senders", l.Senders, tx.From, addressMatch
	case stages.Rcpt:
		if len(tx.Rcpts) == 0 {
			return Hit{}, false
		}
		key, entries, value, match = "rcpts", l.Rcpts, tx.Rcpts[len(tx.Rcpts)-1], addressMatch
	default:
		return Hit{}, false
	}
	if value == "" {
		return Hit{}, false
	}
	for _, e := range entries {
		if match(e, value) {
			return Hit{Key: key, Entry: e, Value: value}, true
		}
	}
	return Hit{}, false
}

// ipMatch matches an address against "192.0.2.1" or "192.0.2.0/24".
func ipMatch(entry, addr string) bool {
	a, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	p, err := parsePrefix(entry)
	return err == nil && p.Contains(a)
}

// parsePrefix parses a network, or an address as a network of one.
func parsePrefix(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a.Unmap(), a.Unmap().BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// heloMatch matches a HELO name against "name" or "*.name". A HELO name
// is not refused for its syntax, so both sides are folded, not parsed.
func heloMatch(entry, helo string) bool {
	return address.Match(address.Fold(entry), address.Fold(helo))
}

// addressMatch matches an address against "user@domain" (the address),
// "domain" or "@domain" (any address at the domain) and "*.domain" (any
// address at a subdomain). Validate has put loaded entries in canonical
// form, as the SMTP side puts addresses; folding again keeps a Policy put
// together in Go matching the same way.
func addressMatch(entry, addr string) bool {
	if local, _, ok := address.Split(entry); ok && local != "" {
		return address.Equal(entry, addr)
	}
	d := address.DomainOf(addr)
	return d != "" && address.Match(address.Fold(strings.TrimPrefix(entry, "@")), d)
}
