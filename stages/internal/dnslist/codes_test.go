package dnslist

import (
	"fmt"
	"testing"

	"github.com/miekg/dns"
)

func TestListed(t *testing.T) {
	rr := func(s string) dns.RR {
		r, err := dns.NewRR(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	sbl, err := ParseCodes([]string{"127.0.0.2-127.0.0.3"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		rrs  []dns.RR
		want string // the listed codes, or "error"
	}{
		{nil, "[]"},
		{[]dns.RR{rr("x.zen.test. 60 IN A 127.0.0.2")}, "[127.0.0.2]"},
		{[]dns.RR{rr("x.zen.test. 60 IN A 127.0.0.4"), rr("x.zen.test. 60 IN A 127.0.0.3"), rr("x.zen.test. 60 IN A 127.0.0.2")}, "[127.0.0.3 127.0.0.2]"},
		{[]dns.RR{rr("x.zen.test. 60 IN A 127.0.0.10")}, "[]"},                                        // a code this list does not count
		{[]dns.RR{rr("x.zen.test. 60 IN TXT \"listed\"")}, "[]"},                                      // not an address
		{[]dns.RR{rr("x.zen.test. 60 IN A 127.255.255.254")}, "error"},                                // query refused
		{[]dns.RR{rr("x.zen.test. 60 IN A 127.0.0.2"), rr("x.zen.test. 60 IN A 192.0.2.1")}, "error"}, // a wildcarding resolver
	} {
		listed, err := sbl.Listed(c.rrs)
		got := "error"
		if err == nil {
			got = fmt.Sprint(listed)
		}
		if got != c.want {
			t.Errorf("Listed(%v) = %s, %v; want %s", c.rrs, got, err, c.want)
		}
	}
}
