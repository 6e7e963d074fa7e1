package dnsbl

import (
	"cmp"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dnslist"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of a dnsbl stage.
type Config struct {
	// Lists are the DNS lists to ask, all at once.
	Lists []List `json:"list"`
	// dns_timeout and cache_size, as every kind that looks names up.
	resolver.Settings
}

// List is one [[stage.config.list]].
type List struct {
	// Zone is the list's DNS zone, e.g. "zen.spamhaus.org".
	Zone string `json:"zone"`
	// Type is "ip" (the client address, at connect) or "domain" (the
	// envelope sender's domain, at MAIL FROM: an RHSBL).
	Type string `json:"type"`
	// Helo also looks the HELO name up in a domain list.
	Helo bool `json:"helo"`
	// Weight is the score a listing adds; negative for an allow-list.
	Weight float64 `json:"weight"`
	// Returns and Mask choose the answers that count as listed; see
	// README.md.
	Returns []string `json:"returns"`
	Mask    uint32   `json:"mask"`
	// Labels names answers in the reason: {"127.0.0.2" = "SBL"}; keys
	// are codes or ranges as in Returns.
	Labels map[string]string `json:"labels"`
	// Action is what a listing asks for besides its weight: continue (the
	// default), tag, quarantine, tempfail, reject, or accept.
	Action string `json:"action"`
	// Reply is the text of a reject or tempfail reply, with {ip},
	// {domain} and {zone} replaced.
	Reply string `json:"reply"`
	// FailClosed makes a failed lookup a stage error instead of skipping
	// the list.
	FailClosed bool `json:"fail_closed"`
}

// defaultDNSTimeout is the DNSTimeout of a stage whose Env has none.
const defaultDNSTimeout = 2 * time.Second

func defaultConfig(env stages.Env) Config {
	return Config{Settings: resolver.Defaults(env, defaultDNSTimeout, 4096)}
}

// maxReply bounds a configured reply text.
const maxReply = 200

// New builds a dnsbl filter from its config block.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := defaultConfig(env)
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if len(c.Lists) == 0 {
		return nil, errors.New(`list: expect at least one [[stage.config.list]] with a zone such as "zen.spamhaus.org"`)
	}
	f := &DNSBL{}
	for i, l := range c.Lists {
		bl, err := newList(l)
		if err != nil {
			return nil, fmt.Errorf("list[%d]: %w", i, err)
		}
		f.lists = append(f.lists, bl)
	}
	r, err := c.New(env)
	if err != nil {
		return nil, err
	}
	f.resolver = r
	return f, nil
}

func newList(l List) (*list, error) {
	zone := strings.ToLower(strings.TrimSuffix(l.Zone, "."))
	if _, ok := dns.IsDomainName(zone); !ok || zone == "" || strings.HasPrefix(zone, ".") {
		return nil, fmt.Errorf("zone: unexpected %q; expect a DNS zone such as \"zen.spamhaus.org\"", l.Zone)
	}
	bl := &list{zone: zone, kind: l.Type, helo: l.Helo, weight: l.Weight, failClosed: l.FailClosed}
	switch l.Type {
	case "":
		bl.kind = typeIP
	case typeIP, typeDomain:
	default:
		return nil, fmt.Errorf("type: unexpected %q; expect ip or domain", l.Type)
	}
	if l.Helo && bl.kind != typeDomain {
		return nil, errors.New(`helo: only for type = "domain"`)
	}
	if math.IsNaN(l.Weight) || math.IsInf(l.Weight, 0) {
		return nil, errors.New("weight: expect a number")
	}
	var err error
	if bl.codes, err = dnslist.ParseCodes(l.Returns, l.Mask); err != nil {
		return nil, err
	}
	for k, v := range l.Labels {
		r, err := dnslist.ParseRange(k)
		if err != nil {
			return nil, fmt.Errorf("labels: %w", err)
		}
		if !printable(v) {
			return nil, fmt.Errorf("labels: %q: expect printable ASCII", k)
		}
		bl.labels = append(bl.labels, label{r, v})
	}
	// Narrowest range first, so "127.0.0.4" = "XBL" beats a wider
	// "127.0.0.0-127.0.0.255" = "listed"; ties in address order, so the
	// reason reads the same every time.
	slices.SortFunc(bl.labels, func(a, b label) int {
		if c := cmp.Compare(a.r[1]-a.r[0], b.r[1]-b.r[0]); c != 0 {
			return c
		}
		return cmp.Compare(a.r[0], b.r[0])
	})
	if l.Action != "" {
		a, err := stages.ParseAction(l.Action)
		if err != nil {
			return nil, fmt.Errorf("action: unexpected %q; expect continue, tag, quarantine, tempfail, reject or accept", l.Action)
		}
		bl.action = a
	}
	if l.Reply != "" {
		if bl.action != stages.Reject && bl.action != stages.TempFail {
			return nil, errors.New(`reply: only with action = "reject" or "tempfail"`)
		}
		if !printable(l.Reply) || len(l.Reply) > maxReply {
			return nil, fmt.Errorf("reply: expect one line of printable ASCII, at most %d characters", maxReply)
		}
		bl.reply = l.Reply
	}
	return bl, nil
}

// printable reports whether s is printable ASCII: reply text goes on the
// SMTP wire.
func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] > '~' {
			return false
		}
	}
	return true
}
