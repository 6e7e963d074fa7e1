package router

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/net/idna"

	"github.com/mailgate/mailgate/policy"
)

// Table maps recipient domains to routes. It is read-only once built and
// safe for concurrent use.
type Table struct {
	exact map[string]*policy.Route
	wild  []wildcard // longest suffix first
	def   *policy.Route
}

type wildcard struct {
	suffix string // ".example.test"
	route  *policy.Route
}

// NewTable builds the table of the [[route]] entries. The routes are kept
// by pointer: the table must not outlive routes.
func NewTable(routes []policy.Route) (*Table, error) {
	t := &Table{exact: make(map[string]*policy.Route)}
	seen := make(map[string]int)
	for i := range routes {
		r := &routes[i]
		kinds := 0
		if len(r.Servers) > 0 {
			kinds++
		}
		if r.MX {
			kinds++
		}
		if r.Maildir != "" {
			kinds++
		}
		if kinds != 1 {
			return nil, fmt.Errorf("route %d: set exactly one of servers, mx or maildir", i+1)
		}
		switch r.TLS {
		case "", tlsOpportunistic, tlsRequired, tlsNone:
		default:
			return nil, fmt.Errorf("route %d: tls: unexpected %q; expect opportunistic, required or none", i+1, r.TLS)
		}
		if len(r.Domains) == 0 {
			return nil, fmt.Errorf("route %d: no domains", i+1)
		}
		for _, d := range r.Domains {
			d = normDomain(d)
			if j, dup := seen[d]; dup {
				return nil, fmt.Errorf("route %d: domain %q is already routed by route %d", i+1, d, j+1)
			}
			seen[d] = i
			switch {
			case d == "*":
				t.def = r
			case strings.HasPrefix(d, "*.") && len(d) > 2 && !strings.Contains(d[1:], "*"):
				t.wild = append(t.wild, wildcard{suffix: d[1:], route: r})
			case d == "" || strings.Contains(d, "*"):
				return nil, fmt.Errorf("route %d: bad domain %q; expect name, *.name or *", i+1, d)
			default:
				t.exact[d] = r
			}
		}
	}
	sort.SliceStable(t.wild, func(i, j int) bool { return len(t.wild[i].suffix) > len(t.wild[j].suffix) })
	return t, nil
}

// Match returns the route for a recipient domain: an exact name first,
// then the longest matching "*.suffix", then the "*" default route. The
// bool is false when no route matches; such mail goes to the domain's MX
// hosts. Match says where mail goes, not whether it may be taken: that is
// Relays.
func (t *Table) Match(domain string) (*policy.Route, bool) {
	if r, ok := t.named(normDomain(domain)); ok {
		return r, true
	}
	if t.def != nil {
		return t.def, true
	}
	return nil, false
}

// Relays reports whether mail for domain may be accepted from any client:
// an exact or "*.suffix" entry names it. The "*" route never counts: it
// carries outbound mail of trusted clients and DSNs to the whole
// Internet, and taking mail from anyone for it would make the gateway an
// open relay (RFC 5321 §3.6.2 and §7.1).
func (t *Table) Relays(domain string) bool {
	_, ok := t.named(normDomain(domain))
	return ok
}

// named returns the route an exact name or the longest "*.suffix" gives
// the normalised domain d.
func (t *Table) named(d string) (*policy.Route, bool) {
	if r, ok := t.exact[d]; ok {
		return r, true
	}
	for _, w := range t.wild {
		if strings.HasSuffix(d, w.suffix) {
			return w.route, true
		}
	}
	return nil, false
}

// normDomain makes domains comparable: DNS names are case-insensitive
// (RFC 4343), "example.test." is the same name as "example.test", and a
// U-label is the same name as its A-label (RFC 5890 §2.3.2.1), which is
// also what DNS is asked. Relay control (Relays) and delivery (Match)
// both see domains through it, so they never disagree about one.
func normDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(strings.TrimSpace(d)), ".")
	if !isASCII(d) {
		if a, err := idna.Lookup.ToASCII(d); err == nil {
			d = a
		}
	}
	return d
}

// domainOf returns the domain of an address: what follows the last "@".
func domainOf(addr string) string {
	i := strings.LastIndexByte(addr, '@')
	if i < 0 {
		return ""
	}
	return normDomain(addr[i+1:])
}
