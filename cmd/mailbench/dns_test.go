package main

import (
	"testing"

	"github.com/miekg/dns"
)

func TestDNSServer(t *testing.T) {
	s, err := startDNS()
	if err != nil {
		t.Fatal(err)
	}
	defer s.stop()
	for _, tc := range []struct {
		net, name string
		qtype     uint16
		rcode     int
		answers   int
	}{
		{"udp", "sender.test.", dns.TypeTXT, dns.RcodeSuccess, 1},
		{"tcp", "SENDER.test.", dns.TypeTXT, dns.RcodeSuccess, 1},
		{"udp", "sender.test.", dns.TypeA, dns.RcodeSuccess, 0},
		{"udp", "1.0.0.127.dnsbl.bench.test.", dns.TypeA, dns.RcodeNameError, 0},
	} {
		m := new(dns.Msg)
		m.SetQuestion(tc.name, tc.qtype)
		c := &dns.Client{Net: tc.net}
		r, _, err := c.Exchange(m, s.addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tc.net, tc.name, err)
		}
		if r.Rcode != tc.rcode || len(r.Answer) != tc.answers {
			t.Errorf("%s %s %s: rcode %s, %d answers; want %s, %d", tc.net, tc.name, dns.TypeToString[tc.qtype],
				dns.RcodeToString[r.Rcode], len(r.Answer), dns.RcodeToString[tc.rcode], tc.answers)
		}
	}
	if txt := spfAnswer(t, s.addr); txt != "v=spf1 ip4:127.0.0.0/8 -all" {
		t.Errorf("SPF record %q", txt)
	}
}

func spfAnswer(t *testing.T, addr string) string {
	m := new(dns.Msg)
	m.SetQuestion("sender.test.", dns.TypeTXT)
	r, err := dns.Exchange(m, addr)
	if err != nil || len(r.Answer) != 1 {
		t.Fatalf("SPF query: %v %v", r, err)
	}
	return r.Answer[0].(*dns.TXT).Txt[0]
}
