package router

import (
	"context"
	"errors"
	"net"
	"time"

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

// lookup returns the addresses to try for mail to domain, best first
// (Resolver.MailHosts). A domain that takes no mail fails for good with
// the reply RFC 7505 §3 names for a null MX, or 5.1.2 (RFC 3463: bad
// destination system address); any other failure is temporary.
func (r *resolver) lookup(ctx context.Context, domain string) ([]target, error) {
	hosts, err := r.dns.MailHosts(ctx, domain)
	switch {
	case errors.Is(err, dnsresolver.ErrNullMX):
		return nil, replyErr(556, 5, 1, 10, "recipient domain accepts no mail (null MX)")
	case errors.Is(err, dnsresolver.ErrNoDomain):
		if domain == "" {
			domain = "(empty)"
		}
		return nil, replyErr(550, 5, 1, 2, "recipient domain "+domain+" not found")
	case err != nil:
		return nil, replyErr(451, 4, 4, 3, err.Error())
	}
	var targets []target
	for _, h := range hosts {
		for _, ip := range h.Addrs {
			targets = append(targets, target{addr: net.JoinHostPort(ip, r.port), name: h.Name})
		}
	}
	return targets, nil
}
