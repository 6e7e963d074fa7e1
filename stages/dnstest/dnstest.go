// Package dnstest runs an in-process DNS server on 127.0.0.1 for tests: it
// answers over UDP and TCP from records the test declares, follows CNAMEs
// inside its zone, truncates large UDP answers so clients must retry over
// TCP, and can leave chosen names unanswered (a timeout) or answer SERVFAIL.
package dnstest

import (
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/miekg/dns"
)

// Zone maps owner names to records in zone-file form without the owner:
// "A 192.0.2.1", "MX 10 mx.example.test.", `TXT "v=spf1 -all"`,
// "300 AAAA 2001:db8::1" (the TTL defaults to 3600). Names need not end in a
// dot. Two words are special:
//
//	TIMEOUT   the server never answers a query for the name of a type the
//	          name has no record of; alone, it never answers at all
//	SERVFAIL  the server answers every query for the name with SERVFAIL
type Zone map[string][]string

// Server is a running test DNS server. Its records may be changed while it
// runs.
type Server struct {
	t    testing.TB
	addr string

	mu       sync.Mutex
	records  map[string][]dns.RR // by lower-case FQDN
	timeout  map[string]bool
	servfail map[string]bool

	queries atomic.Int64
}

// NewServer starts a server answering from zone on 127.0.0.1 (UDP and TCP on
// the same port). It stops when the test ends.
func NewServer(t testing.TB, zone Zone) *Server {
	t.Helper()
	s := &Server{t: t, records: map[string][]dns.RR{}, timeout: map[string]bool{}, servfail: map[string]bool{}}
	for name, recs := range zone {
		s.Set(name, recs...)
	}
	pc, l := listen(t)
	s.addr = pc.LocalAddr().String()
	h := dns.HandlerFunc(s.serve)
	udp := &dns.Server{PacketConn: pc, Handler: h}
	tcp := &dns.Server{Listener: l, Handler: h}
	var wg sync.WaitGroup
	for _, srv := range []*dns.Server{udp, tcp} {
		started := make(chan struct{})
		srv.NotifyStartedFunc = func() { close(started) }
		wg.Add(1)
		go func() {
			defer wg.Done()
			srv.ActivateAndServe()
		}()
		<-started
	}
	t.Cleanup(func() {
		udp.Shutdown()
		tcp.Shutdown()
		wg.Wait()
	})
	return s
}

// listen binds a UDP socket on 127.0.0.1:0 and a TCP listener on the same
// port, trying a few ports in case the TCP side of one is taken.
func listen(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 10 {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listen udp: %v", err)
		}
		l, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, l
		}
		pc.Close()
		lastErr = err
	}
	t.Fatalf("dnstest: listen tcp: %v", lastErr)
	return nil, nil
}

// Addr returns the server's address, "127.0.0.1:port", for UDP and TCP.
func (s *Server) Addr() string { return s.addr }

// Queries returns how many queries the server has received so far,
// including those it did not answer.
func (s *Server) Queries() int { return int(s.queries.Load()) }

// Set replaces the records of name with recs, written as in Zone.
func (s *Server) Set(name string, recs ...string) {
	s.t.Helper()
	owner := canonical(name)
	var rrs []dns.RR
	timeout, servfail := false, false
	for _, rec := range recs {
		switch strings.TrimSpace(rec) {
		case "TIMEOUT":
			timeout = true
			continue
		case "SERVFAIL":
			servfail = true
			continue
		}
		rr, err := dns.NewRR(owner + " " + rec)
		if err != nil || rr == nil {
			s.t.Fatalf("dnstest: record %q for %s: %v", rec, owner, err)
		}
		rrs = append(rrs, rr)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.records[owner] = rrs
	s.timeout[owner] = timeout
	s.servfail[owner] = servfail
}

// Add adds records given as values; their owner names are taken from their
// headers. It suits records awkward to write as text, such as TXT strings
// with quotes or 8-bit bytes. Note that miekg/dns keeps TXT strings in
// presentation form: a backslash starts an escape (\" or \255) there too.
func (s *Server) Add(rrs ...dns.RR) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rr := range rrs {
		owner := canonical(rr.Header().Name)
		if rr.Header().Class == 0 {
			rr.Header().Class = dns.ClassINET
		}
		s.records[owner] = append(s.records[owner], rr)
	}
}

// maxChain bounds CNAME chasing so a loop in a test zone ends.
const maxChain = 8

func (s *Server) serve(w dns.ResponseWriter, req *dns.Msg) {
	s.queries.Add(1)
	if len(req.Question) != 1 {
		m := new(dns.Msg)
		m.SetRcode(req, dns.RcodeFormatError)
		w.WriteMsg(m)
		return
	}
	q := req.Question[0]
	m := new(dns.Msg)
	m.SetReply(req)
	m.Authoritative = true
	m.RecursionAvailable = true

	s.mu.Lock()
	name := canonical(q.Name)
	for hop := 0; ; hop++ {
		if s.timeout[name] && !s.has(name, q.Qtype) {
			s.mu.Unlock()
			return // never answer: the client times out
		}
		if s.servfail[name] {
			s.mu.Unlock()
			m.Rcode = dns.RcodeServerFailure
			m.Answer = nil
			w.WriteMsg(m)
			return
		}
		var cname *dns.CNAME
		for _, rr := range s.records[name] {
			if c, ok := rr.(*dns.CNAME); ok && q.Qtype != dns.TypeCNAME {
				cname = c
			}
		}
		if cname != nil && hop < maxChain {
			m.Answer = append(m.Answer, dns.Copy(cname))
			name = canonical(cname.Target)
			continue
		}
		for _, rr := range s.records[name] {
			if rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY {
				m.Answer = append(m.Answer, dns.Copy(rr))
			}
		}
		if len(m.Answer) == 0 && !s.exists(name) {
			m.Rcode = dns.RcodeNameError
		}
		break
	}
	s.mu.Unlock()

	if len(m.Answer) == 0 || m.Answer[len(m.Answer)-1].Header().Rrtype == dns.TypeCNAME {
		m.Ns = append(m.Ns, soa(name))
	}
	size := uint16(dns.MinMsgSize)
	if opt := req.IsEdns0(); opt != nil {
		size = max(opt.UDPSize(), dns.MinMsgSize)
		m.SetEdns0(size, false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(int(size))
	}
	w.WriteMsg(m)
}

// has reports whether name has records of type qtype. The caller holds s.mu.
func (s *Server) has(name string, qtype uint16) bool {
	for _, rr := range s.records[name] {
		if rr.Header().Rrtype == qtype {
			return true
		}
	}
	return false
}

// canonical returns name in the one presentation form the server keys its
// records by: lower case, fully qualified, and escaped the way miekg/dns
// escapes names it unpacks (a space is "\\ ", a NUL "\\000"), so that a
// name a test wrote either way matches the name a query carries.
func canonical(name string) string {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), dns.TypeA)
	wire, err := m.Pack()
	if err == nil && m.Unpack(wire) == nil {
		name = m.Question[0].Name
	}
	return dns.CanonicalName(name)
}

// exists reports whether name has records or is an empty non-terminal (a
// name below it has records), so that "no data" and NXDOMAIN differ as in a
// real zone (RFC 8020). The caller holds s.mu.
func (s *Server) exists(name string) bool {
	if len(s.records[name]) > 0 {
		return true
	}
	for owner, rrs := range s.records {
		if len(rrs) > 0 && dns.IsSubDomain(name, owner) {
			return true
		}
	}
	return false
}

// soa is the authority record of negative answers; its 60-second minimum
// lets clients cache them (RFC 2308 §5).
func soa(name string) dns.RR {
	labels := dns.SplitDomainName(name)
	apex := "."
	if len(labels) > 0 {
		apex = labels[len(labels)-1] + "."
	}
	return &dns.SOA{
		Hdr: dns.RR_Header{Name: apex, Rrtype: dns.TypeSOA, Class: dns.ClassINET, Ttl: 60},
		Ns:  "ns.dnstest.", Mbox: "hostmaster.dnstest.",
		Serial: 1, Refresh: 60, Retry: 60, Expire: 60, Minttl: 60,
	}
}
