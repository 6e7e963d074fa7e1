package dnsbl

import (
	"context"
	"net/netip"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// BenchmarkDNSBL evaluates a connecting client against two IP lists served
// by the test DNS server, which lists nobody (NXDOMAIN, as for most
// clients). "cached" is one client again and again (the answers cached
// for their TTL), "new-client" a new address each time: two queries over
// loopback UDP.
func BenchmarkDNSBL(b *testing.B) {
	srv := dnstest.NewServer(b, dnstest.Zone{})
	f, err := New(stages.Env{DNSServers: []string{srv.Addr()}},
		stages.JSONConfig([]byte(`{"list": [{"zone": "zen.spamhaus.test"}, {"zone": "bl.spamcop.test"}]}`)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	for _, bc := range []struct {
		name string
		ip   func(i int) netip.Addr
	}{
		{"cached", func(int) netip.Addr { return netip.MustParseAddr("192.0.2.7") }},
		// 16M addresses before one repeats: none is in the cache.
		{"new-client", func(i int) netip.Addr { return netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}) }},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				tx := &stages.Transaction{Client: stages.Client{Addr: bc.ip(i), Helo: "client.example.test"}}
				v, err := f.Run(ctx, stages.Connect, tx)
				if err != nil || v.Action != stages.Continue {
					b.Fatalf("verdict %+v, error %v", v, err)
				}
			}
		})
	}
}
