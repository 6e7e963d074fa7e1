package spf

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/resolver"
)

func testChecker(t testing.TB, ip string) *checker {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"3.2.0.192.in-addr.arpa": {"PTR mx.example.com."},
		"mx.example.com":         {"A 192.0.2.3"},
	})
	// Every name is answered: the timeout is an upper bound only.
	r, err := resolver.New([]string{srv.Addr()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &checker{
		dns: r, ip: netip.MustParseAddr(ip), local: "strong-bad", senderDomain: "email.example.com",
		helo: "mx.example.org", receiver: "mx.example.test", now: time.Unix(1700000000, 0),
	}
}

// TestExpand checks the examples of RFC 7208 §7.4 and the rest of §7.3.
func TestExpand(t *testing.T) {
	v4, v6 := testChecker(t, "192.0.2.3"), testChecker(t, "2001:db8::cb01")
	tests := []struct {
		c       *checker
		macro   string
		explain bool
		want    string
	}{
		{v4, "%{s}", false, "strong-bad@email.example.com"},
		{v4, "%{o}", false, "email.example.com"},
		{v4, "%{d}", false, "email.example.com"},
		{v4, "%{d4}", false, "email.example.com"},
		{v4, "%{d3}", false, "email.example.com"},
		{v4, "%{d2}", false, "example.com"},
		{v4, "%{d1}", false, "com"},
		{v4, "%{dr}", false, "com.example.email"},
		{v4, "%{d2r}", false, "example.email"},
		{v4, "%{l}", false, "strong-bad"},
		{v4, "%{l-}", false, "strong.bad"},
		{v4, "%{lr}", false, "strong-bad"},
		{v4, "%{lr-}", false, "bad.strong"},
		{v4, "%{l1r-}", false, "strong"},
		{v4, "%{ir}.%{v}._spf.%{d2}", false, "3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{lr-}.lp._spf.%{d2}", false, "bad.strong.lp._spf.example.com"},
		{v4, "%{lr-}.lp.%{ir}.%{v}._spf.%{d2}", false, "bad.strong.lp.3.2.0.192.in-addr._spf.example.com"},
		{v4, "%{ir}.%{v}.%{l1r-}.lp._spf.%{d2}", false, "3.2.0.192.in-addr.strong.lp._spf.example.com"},
		{v4, "%{d2}.trusted-domains.example.net", false, "example.com.trusted-domains.example.net"},
		{v6, "%{ir}.%{v}._spf.%{d2}", false, "1.0.b.c.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6._spf.example.com"},
		{v4, "%{p}", false, "mx.example.com"},
		{v6, "%{p}", false, "unknown"},
		{v4, "%{h}", false, "mx.example.org"},
		{v4, "%%%_%-", false, "% %20"},
		{v4, "%{d999999999999}", false, "email.example.com"},
		{v4, "%{S}", false, "strong-bad%40email.example.com"},
		{v4, "%{c} %{r} %{t}", true, "192.0.2.3 mx.example.test 1700000000"},
		{v6, "%{c} %{C}", true, "2001:db8::cb01 2001%3Adb8%3A%3Acb01"},
	}
	for _, tt := range tests {
		ms, err := parseMacro(tt.macro, tt.explain)
		if err != nil {
			t.Errorf("%s: %v", tt.macro, err)
			continue
		}
		if got := tt.c.expand(context.Background(), ms, "email.example.com"); got != tt.want {
			t.Errorf("%s = %q, want %q", tt.macro, got, tt.want)
		}
	}
}

func TestExpandDomainTruncates(t *testing.T) {
	c := testChecker(t, "192.0.2.3")
	c.local = strings.Repeat("l", 60)
	ms, err := parseDomainSpec("%{l}.%{l}.%{l}.%{l}.%{l}.example.com.")
	if err != nil {
		t.Fatal(err)
	}
	// §7.3: cut whole labels from the left until 253 octets are left.
	got := c.expandDomain(context.Background(), ms, "example.com")
	if want := strings.Repeat(c.local+".", 3) + "example.com"; got != want {
		t.Errorf("got %q (%d octets), want %q", got, len(got), want)
	}
}

// FuzzMacro feeds arbitrary macro-strings and senders to the parser and
// the expander: no panic, and expansions stay within their bound.
func FuzzMacro(f *testing.F) {
	for _, s := range []string{"%{ir}.%{v}._spf.%{d2}", "%{l1r-+}", "%{S}%{C}%{T}", "%%%_%-", "%{p}.x", "%{d99r.-+,/_=}"} {
		f.Add(s, "strong-bad@email.example.com", true)
	}
	c := testChecker(f, "2001:db8::cb01")
	f.Fuzz(func(t *testing.T, macro, sender string, explain bool) {
		ms, err := parseMacro(macro, explain)
		if err != nil {
			return
		}
		cc := *c
		at := strings.LastIndexByte(sender, '@')
		cc.local, cc.senderDomain = sender[:max(at, 0)], sender[at+1:]
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if got := cc.expand(ctx, ms, cc.senderDomain); len(got) > maxExpansion {
			t.Fatalf("expansion of %d octets", len(got))
		}
		if !explain {
			if name := cc.expandDomain(ctx, ms, cc.senderDomain); len(name) > maxDomainLen && strings.Contains(name, ".") {
				t.Fatalf("domain of %d octets with labels left to cut", len(name))
			}
		}
	})
}
