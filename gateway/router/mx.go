package router

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	dnsresolver "github.com/mailgate/mailgate/stages/resolver"
)

// target is one address to try for a destination.
type target struct {
	addr string // ip:port or host:port, what is dialed
	name string // host name: TLS server name, logs, Remote-MTA of DSNs
}

// mxCacheSize is how many DNS answers (MX, A, AAAA) the router keeps for
// their TTL: a queue of mail for one domain looks it up once.
const mxCacheSize = 4096

// resolver finds the mail hosts of a domain with the [dns] servers of the
// config, not the system's, through the DNS client the stages use.
type resolver struct {
	dns  *dnsresolver.Resolver
	port string // SMTP port of MX hosts: "25" except in tests
}

func newResolver(servers []string, timeout time.Duration, port string) (*resolver, error) {
	r, err := dnsresolver.New(servers, timeout, dnsresolver.WithCache(mxCacheSize))
	if err != nil {
		return nil, err
	}
	return &resolver{dns: r, port: port}, nil
}

// errNullMX is the failure for a domain that publishes a null MX: RFC 7505
// §3 says such a domain accepts no mail, and names the reply.
func errNullMX() error {
	return replyErr(556, 5, 1, 10, "recipient domain accepts no mail (null MX)")
}

func errNoDomain(d string) error {
	return replyErr(550, 5, 1, 2, fmt.Sprintf("recipient domain %s not found", d))
}

// lookup returns the addresses to try for mail to domain, best first
// (RFC 5321 §5.1). Permanent failures are *smtp.SMTPError with a 5xx code.
func (r *resolver) lookup(ctx context.Context, domain string) ([]target, error) {
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		// An address literal names the host itself (RFC 5321 §4.1.3).
		lit := strings.TrimPrefix(domain[1:len(domain)-1], "IPv6:")
		ip := net.ParseIP(lit)
		if ip == nil {
			return nil, errNoDomain(domain)
		}
		return []target{{addr: net.JoinHostPort(ip.String(), r.port), name: ip.String()}}, nil
	}
	if domain == "" {
		return nil, errNoDomain("(empty)")
	}
	in, err := r.query(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	if in.NXDomain() {
		return nil, errNoDomain(domain)
	}
	var mxs []*dns.MX
	for _, rr := range in.RRs {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	if len(mxs) == 1 && mxs[0].Mx == "." {
		return nil, errNullMX()
	}
	implicit := len(mxs) == 0
	if implicit {
		// RFC 5321 §5.1: without MX records the domain itself is the
		// mail host.
		mxs = []*dns.MX{{Mx: dns.Fqdn(domain)}}
	}
	// RFC 5321 §5.1: lower preference first, hosts of equal preference in
	// random order to spread the load.
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	sort.SliceStable(mxs, func(i, j int) bool { return mxs[i].Preference < mxs[j].Preference })

	var targets []target
	var lastErr error
	for _, mx := range mxs {
		if mx.Mx == "." {
			continue
		}
		host := strings.TrimSuffix(mx.Mx, ".")
		ips, err := r.addrs(ctx, host)
		if err != nil {
			lastErr = err
			continue
		}
		for _, ip := range ips {
			targets = append(targets, target{addr: net.JoinHostPort(ip, r.port), name: host})
		}
	}
	if len(targets) > 0 {
		return targets, nil
	}
	if lastErr == nil && implicit {
		return nil, errNoDomain(domain)
	}
	if lastErr == nil {
		lastErr = errors.New("no address for any MX host")
	}
	return nil, replyErr(451, 4, 4, 3, fmt.Sprintf("mail hosts of %s: %v", domain, lastErr))
}

// addrs returns the IPv4 then IPv6 addresses of host. No address at all
// is not an error: the caller decides what that means.
func (r *resolver) addrs(ctx context.Context, host string) ([]string, error) {
	var ips []string
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		in, err := r.query(ctx, host, qt)
		if err != nil {
			return nil, err
		}
		for _, rr := range in.RRs {
			switch rr := rr.(type) {
			case *dns.A:
				ips = append(ips, rr.A.String())
			case *dns.AAAA:
				ips = append(ips, rr.AAAA.String())
			}
		}
	}
	return ips, nil
}

// query looks name up. A failure without an answer (timeouts, SERVFAIL)
// is a temporary delivery failure.
func (r *resolver) query(ctx context.Context, name string, qtype uint16) (dnsresolver.Answer, error) {
	a, err := r.dns.Lookup(ctx, name, qtype)
	if err != nil {
		return a, replyErr(451, 4, 4, 3, fmt.Sprintf("DNS %s %s: %v", dns.TypeToString[qtype], name, err))
	}
	return a, nil
}
