package resolver

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"slices"
	"strings"

	"github.com/miekg/dns"
)

// ErrNullMX is the failure for a domain that publishes a null MX: RFC 7505
// §3 says such a domain accepts no mail.
var ErrNullMX = errors.New("domain accepts no mail (null MX)")

// ErrNoDomain is the failure for a domain that does not exist, or that
// has no MX record and no address of its own.
var ErrNoDomain = errors.New("domain not found")

// MailHost is a host that takes mail for a domain.
type MailHost struct {
	Name  string   // its name, or the address of an address literal
	Addrs []string // IPv4, then IPv6
}

// MailHosts returns the hosts that take mail for domain, best first, as
// RFC 5321 §5.1 orders them: lower MX preference first, hosts of equal
// preference in random order to spread the load; without MX records the
// domain itself. Hosts without an address are left out. An address
// literal ("[192.0.2.1]", "[IPv6:…]") names the host itself (RFC 5321
// §4.1.3). The error is ErrNullMX, ErrNoDomain, or a temporary failure.
func (r *Resolver) MailHosts(ctx context.Context, domain string) ([]MailHost, error) {
	if strings.HasPrefix(domain, "[") && strings.HasSuffix(domain, "]") {
		ip := net.ParseIP(strings.TrimPrefix(domain[1:len(domain)-1], "IPv6:"))
		if ip == nil {
			return nil, fmt.Errorf("%s: %w", domain, ErrNoDomain)
		}
		return []MailHost{{Name: ip.String(), Addrs: []string{ip.String()}}}, nil
	}
	if domain == "" {
		return nil, fmt.Errorf("(empty): %w", ErrNoDomain)
	}
	in, err := r.Lookup(ctx, domain, dns.TypeMX)
	if err != nil {
		return nil, fmt.Errorf("DNS MX %s: %w", domain, err)
	}
	if in.NXDomain() {
		return nil, fmt.Errorf("%s: %w", domain, ErrNoDomain)
	}
	var mxs []*dns.MX
	for _, rr := range in.RRs {
		if mx, ok := rr.(*dns.MX); ok {
			mxs = append(mxs, mx)
		}
	}
	if len(mxs) == 1 && mxs[0].Mx == "." {
		return nil, fmt.Errorf("%s: %w", domain, ErrNullMX)
	}
	implicit := len(mxs) == 0
	if implicit {
		mxs = []*dns.MX{{Mx: dns.Fqdn(domain)}}
	}
	rand.Shuffle(len(mxs), func(i, j int) { mxs[i], mxs[j] = mxs[j], mxs[i] })
	slices.SortStableFunc(mxs, func(a, b *dns.MX) int { return int(a.Preference) - int(b.Preference) })

	var hosts []MailHost
	var lastErr error
	for _, mx := range mxs {
		if mx.Mx == "." {
			continue
		}
		name := strings.TrimSuffix(mx.Mx, ".")
		addrs, err := r.addrs(ctx, name)
		if err != nil {
			lastErr = err
		} else if len(addrs) > 0 {
			hosts = append(hosts, MailHost{Name: name, Addrs: addrs})
		}
	}
	switch {
	case len(hosts) > 0:
		return hosts, nil
	case lastErr == nil && implicit:
		return nil, fmt.Errorf("%s: %w", domain, ErrNoDomain)
	case lastErr == nil:
		lastErr = errors.New("no address for any MX host")
	}
	return nil, fmt.Errorf("mail hosts of %s: %w", domain, lastErr)
}

// addrs returns the IPv4 then IPv6 addresses of host. No address at all
// is not an error: the caller decides what that means.
func (r *Resolver) addrs(ctx context.Context, host string) ([]string, error) {
	var ips []string
	for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
		in, err := r.Lookup(ctx, host, qt)
		if err != nil {
			return nil, fmt.Errorf("DNS %s %s: %w", dns.TypeToString[qt], host, err)
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
