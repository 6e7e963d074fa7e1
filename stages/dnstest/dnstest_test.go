package dnstest_test

import (
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages/dnstest"
)

// ask queries addr with an upper bound for a loaded machine: the server
// answers every query it is meant to answer well within it.
func ask(t *testing.T, net, addr, name string, qtype uint16) (*dns.Msg, error) {
	return askWithin(t, net, addr, name, qtype, 10*time.Second)
}

// askWithin queries addr, giving up after timeout: for names the server
// never answers, where any timeout tells the same.
func askWithin(t *testing.T, net, addr, name string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	c := &dns.Client{Net: net, Timeout: timeout}
	r, _, err := c.Exchange(m, addr)
	return r, err
}

func TestServer(t *testing.T) {
	s := dnstest.NewServer(t, dnstest.Zone{
		"example.test":         {`TXT "v=spf1 -all"`, "A 192.0.2.1", "MX 10 mx.example.test."},
		"mx.example.test":      {"AAAA 2001:db8::25"},
		"www.example.test":     {"CNAME example.test."},
		"x.y.example.test":     {"A 192.0.2.7"},
		"slow.example.test":    {"TIMEOUT"},
		"part.example.test":    {"A 192.0.2.3", "TIMEOUT"},
		`sp\ ace.example.test`: {"A 192.0.2.4"},
		"broke.example.test":   {"SERVFAIL"},
		"big.example.test":     {"TXT " + strings.Repeat(`"`+strings.Repeat("z", 250)+`" `, 4)},
	})
	s.Add(&dns.TXT{Hdr: dns.RR_Header{Name: "odd.example.test.", Rrtype: dns.TypeTXT, Ttl: 60}, Txt: []string{"a\"b\xff"}})

	tests := []struct {
		name   string
		qtype  uint16
		rcode  int
		answer []string // record types in the answer, in order
	}{
		{"example.test", dns.TypeTXT, dns.RcodeSuccess, []string{"TXT"}},
		{"EXAMPLE.test", dns.TypeMX, dns.RcodeSuccess, []string{"MX"}},
		{"www.example.test", dns.TypeA, dns.RcodeSuccess, []string{"CNAME", "A"}},
		{"www.example.test", dns.TypeCNAME, dns.RcodeSuccess, []string{"CNAME"}},
		{"mx.example.test", dns.TypeA, dns.RcodeSuccess, nil},
		{"y.example.test", dns.TypeA, dns.RcodeSuccess, nil},
		{"none.example.test", dns.TypeA, dns.RcodeNameError, nil},
		{"broke.example.test", dns.TypeA, dns.RcodeServerFailure, nil},
		{"odd.example.test", dns.TypeTXT, dns.RcodeSuccess, []string{"TXT"}},
		{"part.example.test", dns.TypeA, dns.RcodeSuccess, []string{"A"}},
		{`SP\032ACE.example.test`, dns.TypeA, dns.RcodeSuccess, []string{"A"}},
	}
	for _, tt := range tests {
		r, err := ask(t, "udp", s.Addr(), tt.name, tt.qtype)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		var got []string
		for _, rr := range r.Answer {
			got = append(got, dns.TypeToString[rr.Header().Rrtype])
		}
		if r.Rcode != tt.rcode || strings.Join(got, ",") != strings.Join(tt.answer, ",") {
			t.Errorf("%s %s: rcode %d answer %v; want %d %v", tt.name, dns.TypeToString[tt.qtype], r.Rcode, got, tt.rcode, tt.answer)
		}
	}

	// miekg/dns hands TXT strings over in presentation form: the quote and
	// the 8-bit byte arrive escaped, so the bytes went through unchanged.
	if r, _ := ask(t, "udp", s.Addr(), "odd.example.test", dns.TypeTXT); r.Answer[0].(*dns.TXT).Txt[0] != `a\"b\255` {
		t.Errorf("TXT value not kept byte for byte: %q", r.Answer[0].(*dns.TXT).Txt)
	}
	if _, err := askWithin(t, "udp", s.Addr(), "slow.example.test", dns.TypeA, 300*time.Millisecond); err == nil {
		t.Error("TIMEOUT name answered")
	}
	if _, err := askWithin(t, "udp", s.Addr(), "part.example.test", dns.TypeTXT, 300*time.Millisecond); err == nil {
		t.Error("TIMEOUT name answered for a type it has no record of")
	}

	// Over UDP without EDNS0 the 1000-byte TXT does not fit in 512 bytes.
	r, err := ask(t, "udp", s.Addr(), "big.example.test", dns.TypeTXT)
	if err != nil || !r.Truncated {
		t.Fatalf("big answer over UDP: truncated=%v err=%v", r != nil && r.Truncated, err)
	}
	r, err = ask(t, "tcp", s.Addr(), "big.example.test", dns.TypeTXT)
	if err != nil || r.Truncated || len(r.Answer) != 1 {
		t.Fatalf("big answer over TCP: %v %v", r, err)
	}

	s.Set("example.test", "A 192.0.2.2")
	r, _ = ask(t, "tcp", s.Addr(), "example.test", dns.TypeTXT)
	if len(r.Answer) != 0 {
		t.Errorf("Set did not replace the records: %v", r.Answer)
	}
	if s.Queries() != len(tests)+6 {
		t.Errorf("Queries() = %d, want %d", s.Queries(), len(tests)+6)
	}
}
