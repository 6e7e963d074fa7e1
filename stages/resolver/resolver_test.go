package resolver_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/resolver"
)

func newResolver(t *testing.T, timeout time.Duration, servers ...*dnstest.Server) *resolver.Resolver {
	t.Helper()
	var addrs []string
	for _, s := range servers {
		addrs = append(addrs, s.Addr())
	}
	r, err := resolver.New(addrs, timeout)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestLookup(t *testing.T) {
	big := strings.Repeat(`"`+strings.Repeat("x", 200)+`" `, 20) // ~4 KB: truncated over UDP
	srv := dnstest.NewServer(t, dnstest.Zone{
		"a.example.test":     {"300 A 192.0.2.1", "60 A 192.0.2.2"},
		"alias.example.test": {"30 CNAME a.example.test."},
		"big.example.test":   {"TXT " + big},
		"empty.example.test": {"TXT \"hello\""},
		"x.sub.example.test": {"A 192.0.2.9"},
		"fail.example.test":  {"SERVFAIL"},
		`a\ b.example.test`:  {"A 192.0.2.5"},
	})
	r := newResolver(t, 10*time.Second, srv) // an upper bound: every name is answered

	tests := []struct {
		name    string
		qtype   uint16
		rcode   int
		n       int
		ttl     uint32
		payload int // length of the TXT data, for big answers
	}{
		{name: "a.example.test", qtype: dns.TypeA, n: 2, ttl: 60},
		{name: "A.Example.TEST.", qtype: dns.TypeA, n: 2, ttl: 60},
		{name: "alias.example.test", qtype: dns.TypeA, n: 2, ttl: 30},
		{name: "empty.example.test", qtype: dns.TypeA, n: 0, ttl: 60}, // no data: SOA minimum
		{name: "sub.example.test", qtype: dns.TypeA, n: 0, ttl: 60},   // empty non-terminal: no data
		{name: "nope.example.test", qtype: dns.TypeA, rcode: dns.RcodeNameError, ttl: 60},
		{name: `A\032B.example.test`, qtype: dns.TypeA, n: 1, ttl: 3600}, // escaped otherwise by the server
		{name: "big.example.test", qtype: dns.TypeTXT, n: 1, ttl: 3600, payload: 20 * 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a, err := r.Lookup(context.Background(), tt.name, tt.qtype)
			if err != nil {
				t.Fatal(err)
			}
			if a.Rcode != tt.rcode || len(a.RRs) != tt.n || a.TTL != tt.ttl {
				t.Fatalf("got rcode %d, %d records, ttl %d; want %d, %d, %d", a.Rcode, len(a.RRs), a.TTL, tt.rcode, tt.n, tt.ttl)
			}
			if a.NXDomain() != (tt.rcode == dns.RcodeNameError) || a.Empty() != (tt.n == 0) {
				t.Fatalf("NXDomain %v Empty %v disagree with the answer", a.NXDomain(), a.Empty())
			}
			for _, rr := range a.RRs {
				if rr.Header().Rrtype != tt.qtype {
					t.Fatalf("record of another type in the answer: %v", rr)
				}
			}
			if tt.payload > 0 {
				if got := len(strings.Join(a.RRs[0].(*dns.TXT).Txt, "")); got != tt.payload {
					t.Fatalf("TXT payload %d bytes, want %d (TCP fallback)", got, tt.payload)
				}
			}
		})
	}
}

func TestLookupErrors(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"slow.example.test": {"TIMEOUT"},
		"fail.example.test": {"SERVFAIL"},
	})
	r := newResolver(t, 100*time.Millisecond, srv)
	for _, name := range []string{"slow.example.test", "fail.example.test"} {
		_, err := r.Lookup(context.Background(), name, dns.TypeTXT)
		if !errors.Is(err, resolver.ErrTemporary) {
			t.Errorf("%s: got %v, want ErrTemporary", name, err)
		}
	}
	before := srv.Queries()
	for _, name := range []string{"a..example.test", strings.Repeat("x", 64) + ".example.test", ".bad"} {
		_, err := r.Lookup(context.Background(), name, dns.TypeA)
		if !errors.Is(err, resolver.ErrBadName) || errors.Is(err, resolver.ErrTemporary) {
			t.Errorf("%q: got %v, want ErrBadName only", name, err)
		}
	}
	if srv.Queries() != before {
		t.Errorf("bad names reached the server")
	}
}

func TestLookupFailover(t *testing.T) {
	dead := dnstest.NewServer(t, dnstest.Zone{"a.example.test": {"TIMEOUT"}})
	broken := dnstest.NewServer(t, dnstest.Zone{"a.example.test": {"SERVFAIL"}})
	good := dnstest.NewServer(t, dnstest.Zone{"a.example.test": {"A 192.0.2.1"}})
	// What the dead server costs; the good one must answer within it on a
	// loaded machine too.
	r := newResolver(t, 2*time.Second, dead, broken, good)
	a, err := r.Lookup(context.Background(), "a.example.test", dns.TypeA)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.RRs) != 1 || a.RRs[0].(*dns.A).A.String() != "192.0.2.1" {
		t.Fatalf("got %v", a.RRs)
	}
	if dead.Queries() == 0 || broken.Queries() == 0 {
		t.Fatalf("servers not tried in order: dead %d, broken %d queries", dead.Queries(), broken.Queries())
	}
}

func TestLookupCancel(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{"slow.example.test": {"TIMEOUT"}})
	r := newResolver(t, 10*time.Second, srv)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := r.Lookup(ctx, "slow.example.test", dns.TypeA)
	if !errors.Is(err, context.Canceled) || !errors.Is(err, resolver.ErrTemporary) {
		t.Fatalf("got %v, want context.Canceled and ErrTemporary", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("cancel took %v", d)
	}
}

func TestLookupCache(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"a.example.test":    {"A 192.0.2.1"},
		"zero.example.test": {"0 A 192.0.2.2"},
		"slow.example.test": {"TIMEOUT"},
	})
	// What the slow name costs (twice); the others must be answered
	// within it on a loaded machine too, or they are not cached.
	r, err := resolver.New([]string{srv.Addr()}, time.Second, resolver.WithCache(10))
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	lookup := func(name string) {
		t.Helper()
		r.Lookup(ctx, name, dns.TypeA)
	}
	count := func(name string, want int) {
		t.Helper()
		before := srv.Queries()
		lookup(name)
		lookup(name)
		if got := srv.Queries() - before; got != want {
			t.Errorf("%s: %d queries for two lookups, want %d", name, got, want)
		}
	}
	count("a.example.test", 1)
	count("A.EXAMPLE.TEST", 0)                // same key, still cached
	count("nope.example.test", 1)             // NXDOMAIN is cached with the SOA minimum
	count("zero.example.test", 2)             // TTL 0 is never cached
	count("slow.example.test", 2)             // failures are never cached
	srv.Set("a.example.test", "A 192.0.2.99") // the cache still answers
	a, _ := r.Lookup(ctx, "a.example.test", dns.TypeA)
	if got := a.RRs[0].(*dns.A).A.String(); got != "192.0.2.1" {
		t.Fatalf("cached answer %s, want 192.0.2.1", got)
	}
}

func TestTXTStrings(t *testing.T) {
	// Txt is in presentation form on the way in too: `\\` is one backslash.
	srv := dnstest.NewServer(t, nil)
	srv.Add(&dns.TXT{Hdr: dns.RR_Header{Name: "t.example.test.", Rrtype: dns.TypeTXT},
		Txt: []string{"v=spf1 ", `exp="q" \\ end` + "\xff\x00"}})
	raw := []string{"v=spf1 ", `exp="q" \ end` + "\xff\x00"}
	r := newResolver(t, 10*time.Second, srv)
	a, err := r.Lookup(context.Background(), "t.example.test", dns.TypeTXT)
	if err != nil || len(a.RRs) != 1 {
		t.Fatalf("%v %v", a, err)
	}
	got := resolver.TXTStrings(a.RRs[0])
	if len(got) != 2 || got[0] != raw[0] || got[1] != raw[1] {
		t.Fatalf("got %q, want %q", got, raw)
	}
	if resolver.TXTStrings(&dns.A{}) != nil {
		t.Fatal("strings from an A record")
	}
}
