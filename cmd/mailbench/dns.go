package main

import (
	"fmt"
	"net"
	"strings"
	"sync/atomic"

	"github.com/miekg/dns"
)

// dnsServer answers the default chain's lookups on loopback, UDP and TCP
// on one port: an SPF record that passes the sender domain from 127.0.0.0/8,
// and NXDOMAIN for every other name, so DNSBL and URIBL zones are empty.
type dnsServer struct {
	addr    string
	udp     *dns.Server
	tcp     *dns.Server
	queries atomic.Int64
}

// senderDomain is the envelope sender's domain; its SPF record passes the
// loopback client.
const senderDomain = "sender.test"

func startDNS() (*dnsServer, error) {
	s := &dnsServer{}
	var err error
	for range 10 { // the TCP port may be taken: try another pair
		var pc net.PacketConn
		pc, err = net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("dns server: %w", err)
		}
		var l net.Listener
		l, err = net.Listen("tcp", pc.LocalAddr().String())
		if err != nil {
			pc.Close()
			continue
		}
		s.addr = pc.LocalAddr().String()
		s.udp = &dns.Server{PacketConn: pc, Handler: s}
		s.tcp = &dns.Server{Listener: l, Handler: s}
		break
	}
	if s.udp == nil {
		return nil, fmt.Errorf("dns server: %w", err)
	}
	started := make(chan struct{}, 2)
	for _, srv := range []*dns.Server{s.udp, s.tcp} {
		srv.NotifyStartedFunc = func() { started <- struct{}{} }
		go srv.ActivateAndServe()
	}
	<-started
	<-started
	return s, nil
}

func (s *dnsServer) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	switch {
	case name == dns.Fqdn(senderDomain) && q.Qtype == dns.TypeTXT:
		m.Answer = append(m.Answer, &dns.TXT{
			Hdr: dns.RR_Header{Name: q.Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 3600},
			Txt: []string{"v=spf1 ip4:127.0.0.0/8 -all"},
		})
	case name == dns.Fqdn(senderDomain):
		// The name exists with no data of this type (RFC 2308 §2.2).
		m.Ns = append(m.Ns, s.soa())
	default:
		m.Rcode = dns.RcodeNameError
		m.Ns = append(m.Ns, s.soa())
	}
	w.WriteMsg(m)
}

// soa goes in the authority section of negative answers, whose TTL is its
// minimum (RFC 2308 §5), so resolvers that cache can cache them.
func (s *dnsServer) soa() dns.RR {
	return &dns.SOA{
		Hdr:     dns.RR_Header{Name: "test.", Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 300},
		Ns:      "ns.test.",
		Mbox:    "hostmaster.test.",
		Serial:  1,
		Refresh: 3600, Retry: 600, Expire: 86400, Minttl: 300,
	}
}

func (s *dnsServer) stop() {
	s.udp.Shutdown()
	s.tcp.Shutdown()
}
