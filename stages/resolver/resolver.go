// Package resolver is the one DNS client of mailgate: the built-in stages
// and the router's MX lookups share it, with its deadlines and cache. A
// lookup returns the records of the asked type, the response code and how
// long the answer may be kept, and keeps failures that say nothing about the
// name (timeouts, SERVFAIL) apart from answers that say a name or record does
// not exist, because SPF and DNSBL treat the two very differently.
// MailHosts chooses the hosts that take a domain's mail, as the router
// needs them.
package resolver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/miekg/dns"
)

// ErrTemporary marks a lookup that failed without an answer about the name:
// a timeout, a network error, SERVFAIL or any response code other than
// NOERROR and NXDOMAIN (RFC 7208 §2.6.6 calls these temperror). Test with
// errors.Is.
var ErrTemporary = errors.New("temporary DNS failure")

// ErrBadName is returned for a name that cannot be sent in a query (an empty
// or over-long label, more than 255 octets), before anything is sent.
var ErrBadName = errors.New("invalid domain name")

// DefaultTimeout bounds one query to one server when New is given zero.
const DefaultTimeout = 3 * time.Second

// maxCacheTTL bounds how long a cached answer is kept whatever its TTL says,
// so a record published with a huge TTL cannot pin a stale answer.
const maxCacheTTL = 24 * time.Hour

// Answer is the outcome of a lookup that got a usable response.
type Answer struct {
	// RRs holds the answer-section records of the asked type (CNAMEs the
	// server followed are left out). Callers must not modify them: they may
	// be shared with the cache.
	RRs []dns.RR
	// Rcode is dns.RcodeSuccess or dns.RcodeNameError (NXDOMAIN).
	Rcode int
	// TTL is how many seconds the answer may be kept: the lowest TTL of the
	// answer section or, for a negative answer, the SOA minimum from the
	// authority section (RFC 2308 §5); 0 if nothing says.
	TTL uint32
}

// NXDomain reports whether the name does not exist.
func (a Answer) NXDomain() bool { return a.Rcode == dns.RcodeNameError }

// Empty reports whether the answer holds no record of the asked type: the
// name does not exist or has no such record ("no data").
func (a Answer) Empty() bool { return len(a.RRs) == 0 }

// Option changes how New builds a Resolver.
type Option func(*Resolver)

// WithCache keeps up to size answers (positive and negative) for as long as
// their TTL allows. Failures are never cached.
func WithCache(size int) Option {
	return func(r *Resolver) {
		if size > 0 {
			r.cache = newCache(size, time.Now)
		}
	}
}

// Resolver sends queries to a list of recursive servers, in order. It is safe
// for concurrent use.
type Resolver struct {
	servers []string
	timeout time.Duration
	cache   *cache
}

// New returns a Resolver asking servers ("host:port"; a bare host means port
// 53) in order. With no servers it reads /etc/resolv.conf. timeout bounds
// each query to one server; zero means DefaultTimeout.
func New(servers []string, timeout time.Duration, opts ...Option) (*Resolver, error) {
	if len(servers) == 0 {
		conf, err := dns.ClientConfigFromFile("/etc/resolv.conf")
		if err != nil {
			return nil, fmt.Errorf("resolver: read /etc/resolv.conf: %w", err)
		}
		for _, s := range conf.Servers {
			servers = append(servers, net.JoinHostPort(s, conf.Port))
		}
		if len(servers) == 0 {
			return nil, errors.New("resolver: /etc/resolv.conf lists no nameserver")
		}
	}
	r := &Resolver{timeout: timeout}
	if r.timeout <= 0 {
		r.timeout = DefaultTimeout
	}
	for _, s := range servers {
		if _, _, err := net.SplitHostPort(s); err != nil {
			s = net.JoinHostPort(strings.Trim(s, "[]"), "53")
		}
		r.servers = append(r.servers, s)
	}
	for _, o := range opts {
		o(r)
	}
	return r, nil
}

// Lookup asks for the records of type qtype at name. NXDOMAIN and "no data"
// are answers, not errors; an error wraps ErrTemporary when no server gave a
// usable answer, or ErrBadName when the name cannot be queried.
func (r *Resolver) Lookup(ctx context.Context, name string, qtype uint16) (Answer, error) {
	name = dns.Fqdn(strings.ToLower(name))
	if _, ok := dns.IsDomainName(name); !ok {
		return Answer{}, fmt.Errorf("lookup %q: %w", name, ErrBadName)
	}
	key := cacheKey{name, qtype}
	if r.cache != nil {
		if a, ok := r.cache.get(key); ok {
			return a, nil
		}
	}
	a, err := r.exchange(ctx, name, qtype)
	if err != nil {
		return Answer{}, err
	}
	if r.cache != nil && a.TTL > 0 {
		r.cache.put(key, a)
	}
	return a, nil
}

func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) (Answer, error) {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	// 1232 octets is the DNS Flag Day 2020 payload size: large enough for
	// most TXT answers, small enough to avoid IP fragmentation.
	m.SetEdns0(1232, false)

	var errs []error
	for _, server := range r.servers {
		if err := ctx.Err(); err != nil {
			errs = append(errs, err)
			break
		}
		resp, err := r.query(ctx, "udp", server, m)
		if err == nil && resp.Truncated {
			// RFC 1035 §4.2.1, RFC 7766 §5: a truncated UDP answer is
			// retried over TCP.
			resp, err = r.query(ctx, "tcp", server, m)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		switch resp.Rcode {
		case dns.RcodeSuccess, dns.RcodeNameError:
			return answerOf(resp, qtype), nil
		default:
			errs = append(errs, fmt.Errorf("%s: %s", server, dns.RcodeToString[resp.Rcode]))
		}
	}
	return Answer{}, fmt.Errorf("lookup %s %s: %w: %w", name, dns.TypeToString[qtype], ErrTemporary, errors.Join(errs...))
}

// query sends m once over network to server, giving up when ctx is done or
// after the resolver's timeout.
func (r *Resolver) query(ctx context.Context, network, server string, m *dns.Msg) (*dns.Msg, error) {
	ctx, cancel := context.WithTimeout(ctx, r.timeout)
	defer cancel()
	c := &dns.Client{Net: network, Timeout: r.timeout}
	conn, err := c.DialContext(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	// The client only looks at the context's deadline; closing the
	// connection makes a cancellation end the read at once too.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	resp, _, err := c.ExchangeWithConnContext(ctx, m, conn)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, err
	}
	if len(resp.Question) != 1 || !sameName(resp.Question[0].Name, m.Question[0].Name) ||
		resp.Question[0].Qtype != m.Question[0].Qtype {
		return nil, errors.New("response does not match the question")
	}
	return resp, nil
}

// sameName compares two names in wire form, ignoring ASCII case: their
// presentation forms may escape the same octet differently ("\\ " and
// "\\032").
func sameName(a, b string) bool {
	var wa, wb [256]byte
	na, errA := dns.PackDomainName(a, wa[:], 0, nil, false)
	nb, errB := dns.PackDomainName(b, wb[:], 0, nil, false)
	if errA != nil || errB != nil || na != nb {
		return false
	}
	for i := range na {
		if lower(wa[i]) != lower(wb[i]) {
			return false
		}
	}
	return true
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

func answerOf(resp *dns.Msg, qtype uint16) Answer {
	a := Answer{Rcode: resp.Rcode}
	first := true
	minTTL := func(ttl uint32) {
		if first || ttl < a.TTL {
			a.TTL, first = ttl, false
		}
	}
	for _, rr := range resp.Answer {
		h := rr.Header()
		if h.Class != dns.ClassINET {
			continue
		}
		// Every record of the chain counts for the TTL: the answer is only
		// as fresh as its shortest-lived link.
		minTTL(h.Ttl)
		if h.Rrtype == qtype || qtype == dns.TypeANY {
			a.RRs = append(a.RRs, rr)
		}
	}
	if len(a.RRs) == 0 {
		// RFC 2308 §5: a negative answer lives for min(SOA TTL, SOA
		// MINIMUM); without an SOA it must not be cached.
		a.TTL = 0
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				a.TTL = min(soa.Hdr.Ttl, soa.Minttl)
				break
			}
		}
	}
	return a
}
