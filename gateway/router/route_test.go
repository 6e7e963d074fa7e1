package router

import (
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
)

func TestTableMatch(t *testing.T) {
	routes := []policy.Route{
		{Domains: []string{"example.test", "*.example.test"}, Servers: []string{"a:25"}},
		{Domains: []string{"*.deep.example.test"}, Servers: []string{"b:25"}},
		{Domains: []string{"Other.Test."}, MX: true},
		{Domains: []string{"*"}, Maildir: "/tmp/x"},
	}
	tab := NewTable(routes)
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

	noDefault := NewTable(routes[:3])
	for _, d := range []string{"anything.else", "xexample.test", ""} {
		if r, ok := noDefault.Match(d); ok {
			t.Errorf("Match(%q) = %v, want no route", d, r)
		}
	}
}

func TestBackoff(t *testing.T) {
	lo, hi := time.Minute, time.Hour
	for _, tc := range []struct {
		n    int
		base time.Duration
	}{
		{1, time.Minute}, {2, 2 * time.Minute}, {3, 4 * time.Minute},
		{7, time.Hour}, {100, time.Hour},
	} {
		for range 20 {
			got := backoff(tc.n, lo, hi)
			if got < tc.base || got > tc.base+tc.base/10 {
				t.Fatalf("backoff(%d) = %v, want %v plus at most 10%%", tc.n, got, tc.base)
			}
		}
	}
}

func TestTableRelays(t *testing.T) {
	// The layout of examples/gateway.toml: our domains, and "*" for the
	// outbound mail of trusted clients and DSNs.
	routes := []policy.Route{
		{Domains: []string{"example.test", "*.example.test"}, Servers: []string{"a:25"}},
		{Domains: []string{"*"}, MX: true},
	}
	tab := NewTable(routes)
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
