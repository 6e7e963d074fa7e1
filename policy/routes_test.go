package policy

import (
	"testing"
)

func TestRouteTableMatch(t *testing.T) {
	routes := []Route{
		{Domains: []string{"example.test", "*.example.test"}, Servers: []string{"a:25"}},
		{Domains: []string{"*.deep.example.test"}, Servers: []string{"b:25"}},
		{Domains: []string{"Other.Test."}, MX: true},
		{Domains: []string{"*"}, Maildir: "/tmp/x"},
	}
	tab := NewRouteTable(routes)
	for _, tc := range []struct {
		domain string
		want   int // index in routes
	}{
		{"example.test", 0},
		{"EXAMPLE.test.", 0},
		{"a.example.test", 0},
		{"x.deep.example.test", 1},
		{"deep.example.test", 0}, // *.deep… matches subdomains only
		{"other.test", 2},
		{"sub.other.test", 3},
		{"anything.else", 3},
	} {
		got, ok := tab.Match(tc.domain)
		if !ok || got != &routes[tc.want] {
			t.Errorf("Match(%q) = %v, %v; want route %d", tc.domain, got, ok, tc.want+1)
		}
	}

	noDefault := NewRouteTable(routes[:3])
	for _, d := range []string{"anything.else", "xexample.test", ""} {
		if r, ok := noDefault.Match(d); ok {
			t.Errorf("Match(%q) = %v, want no route", d, r)
		}
	}
}

func TestRouteTableRelays(t *testing.T) {
	// The layout of examples/gateway.toml: our domains, and "*" for the
	// outbound mail of trusted clients and DSNs.
	routes := []Route{
		{Domains: []string{"example.test", "*.example.test"}, Servers: []string{"a:25"}},
		{Domains: []string{"*"}, MX: true},
	}
	tab := NewRouteTable(routes)
	for _, tc := range []struct {
		domain string
		want   bool
	}{
		{"example.test", true},
		{"Example.TEST.", true},
		{"a.b.example.test", true},
		{"gmail.test", false},
		{"xexample.test", false},
		{"", false},
	} {
		if got := tab.Relays(tc.domain); got != tc.want {
			t.Errorf("Relays(%q) = %v, want %v", tc.domain, got, tc.want)
		}
		// Delivery still has a route for everything.
		if _, ok := tab.Match(tc.domain); !ok {
			t.Errorf("Match(%q): no route", tc.domain)
		}
	}
}

// A domain in UTF-8 is the same domain as its A-label, for relay control
// and for delivery alike.
func TestRouteTableIDN(t *testing.T) {
	tab := NewRouteTable([]Route{{Domains: []string{"xn--bcher-kva.test"}, Servers: []string{"10.0.0.5:25"}}})
	for _, d := range []string{"bücher.test", "BÜCHER.test.", "xn--bcher-kva.test"} {
		if !tab.Relays(d) {
			t.Errorf("Relays(%q) = false", d)
		}
		if _, ok := tab.Match(d); !ok {
			t.Errorf("Match(%q): no route", d)
		}
	}
}
