package policy

import (
	"sort"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// RouteTable maps recipient domains to routes: delivery (the router's
// Match) and relay control (Relays: the SMTP server, the console's
// digests) ask it. Domains compare as address.Fold writes them (case,
// root dot and U-labels folded), the entries and what is looked up
// alike, so that relay control and delivery never disagree about a name.
// It is read-only once built and safe for concurrent use.
type RouteTable struct {
	exact map[string]*Route
	wild  []wildcard // longest suffix first
	def   *Route
}

type wildcard struct {
	suffix string // ".example.test"
	route  *Route
}

// NewRouteTable builds the table of the [[route]] entries of a validated
// config (a domain once, each a name, "*.name" or "*"). The routes are
// kept by pointer: the table must not outlive routes.
func NewRouteTable(routes []Route) *RouteTable {
	t := &RouteTable{exact: make(map[string]*Route)}
	for i := range routes {
		r := &routes[i]
		for _, d := range r.Domains {
			switch d = address.Fold(d); {
			case d == "*":
				t.def = r
			case strings.HasPrefix(d, "*."):
				t.wild = append(t.wild, wildcard{suffix: d[1:], route: r})
			default:
				t.exact[d] = r
			}
		}
	}
	sort.SliceStable(t.wild, func(i, j int) bool { return len(t.wild[i].suffix) > len(t.wild[j].suffix) })
	return t
}

// Match returns the route for a recipient domain: an exact name first,
// then the longest matching "*.suffix", then the "*" default route. The
// bool is false when no route matches; such mail goes to the domain's MX
// hosts. Match says where mail goes, not whether it may be taken: that is
// Relays.
func (t *RouteTable) Match(domain string) (*Route, bool) {
	if r, ok := t.named(address.Fold(domain)); ok {
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
func (t *RouteTable) Relays(domain string) bool {
	_, ok := t.named(address.Fold(domain))
	return ok
}

// named returns the route an exact name or the longest "*.suffix" gives
// the normalised domain d.
func (t *RouteTable) named(d string) (*Route, bool) {
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
