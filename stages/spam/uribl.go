package spam

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages/internal/dnslist"
)

// maxURIBLDomains bounds the domains of one message looked up, so a
// message with a thousand links costs a bounded number of queries.
const maxURIBLDomains = 20

// maxInFlight bounds concurrent URIBL queries of one message.
const maxInFlight = 8

// list is a URI blocklist (RFC 5782 §2.2: the domain name prefixed to the
// zone, an A record means listed).
type list struct {
	zone  string
	score float64
	codes dnslist.Codes
}

func newList(u URIBL) (list, error) {
	zone := strings.ToLower(strings.TrimSuffix(u.Zone, "."))
	if err := validZone(zone); err != nil {
		return list{}, fmt.Errorf("zone: %w", err)
	}
	if !finite(u.Score) {
		return list{}, errors.New("score: expect a number")
	}
	c, err := dnslist.ParseCodes(u.Returns, u.Mask)
	if err != nil {
		return list{}, err
	}
	return list{zone: zone, score: u.Score, codes: c}, nil
}

// hit is one thing that scored: a rule, a URIBL listing, the backend.
type hit struct {
	name   string
	score  float64
	detail string // shown after the score, e.g. a backend's rule names
}

// uriDomains returns the distinct registrable domains of uris, in order.
func uriDomains(uris []string) []string {
	var out []string
	seen := map[string]bool{}
	for _, u := range uris {
		d := uriDomain(uriHost(u))
		if d == "" || seen[d] {
			continue
		}
		seen[d] = true
		out = append(out, d)
		if len(out) == maxURIBLDomains {
			break
		}
	}
	return out
}

// uriblHits looks the domains up in every list. A list that fails for a
// domain (timeout, an answer that is not a listing code) is skipped for it
// and named in skipped: a URIBL is one signal among many, never a reason to
// hold mail up.
func (s *Spam) uriblHits(ctx context.Context, domains []string) (hits []hit, skipped []string) {
	type job struct {
		l      list
		domain string
		listed string // the listing code, "" if not listed
		err    error
	}
	var jobs []*job
	for _, l := range s.uribls {
		for _, d := range domains {
			jobs = append(jobs, &job{l: l, domain: d})
		}
	}
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxInFlight)
	for _, j := range jobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			j.listed, j.err = s.lookup(ctx, j.l, j.domain)
		}()
	}
	wg.Wait()
	for _, j := range jobs {
		switch {
		case j.err != nil:
			skipped = append(skipped, fmt.Sprintf("%s(%s): %v", j.l.zone, j.domain, j.err))
		case j.listed != "":
			hits = append(hits, hit{name: fmt.Sprintf("%s(%s)", j.l.zone, j.domain), score: j.l.score})
		}
	}
	return hits, skipped
}

// lookup returns the code that lists domain in l, or "" if it is not
// listed.
func (s *Spam) lookup(ctx context.Context, l list, domain string) (string, error) {
	a, err := s.resolver.Lookup(ctx, domain+"."+l.zone, dns.TypeA)
	if err != nil {
		return "", err
	}
	listed, err := l.codes.Listed(a.RRs)
	if err != nil || len(listed) == 0 {
		return "", err
	}
	return listed[0].String(), nil
}
