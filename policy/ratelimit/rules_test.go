package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// loadRules parses [[ratelimit]] tables as the gateway gets them.
func loadRules(t testing.TB, toml string) []policy.RateLimit {
	t.Helper()
	c, err := policy.Parse("r.toml", []byte("hostname = \"mx.test\"\ndata_dir = \"/d\"\n"+toml))
	if err != nil {
		t.Fatal(err)
	}
	return c.RateLimits
}

func mail(ip, from string) Event {
	return Event{Client: stages.Client{Addr: netip.MustParseAddr(ip), Helo: "client.test"}, From: from}
}

func rcpt(ip, from, to string) Event {
	ev := mail(ip, from)
	ev.Rcpt = to
	return ev
}

// TestRulesKeys: which events share a key, for each key; each rule has
// burst 2, so the third event under one key is refused.
func TestRulesKeys(t *testing.T) {
	for _, tc := range []struct {
		key, extra string
		same       []Event // all under one key: the third is refused
		other      Event   // under another key: passes after them
	}{
		{"client_ip", "", []Event{mail("192.0.2.1", "a@x.test"), mail("::ffff:192.0.2.1", "b@y.test"), mail("192.0.2.1", "")},
			mail("192.0.2.2", "a@x.test")},
		{"client_net", "", []Event{mail("192.0.2.1", "a@x.test"), mail("192.0.2.200", "b@y.test"), mail("192.0.2.7", "")},
			mail("192.0.3.1", "a@x.test")},
		{"client_net", "", []Event{mail("2001:db8:0:1::1", "a@x.test"), mail("2001:db8:0:1:ffff::2", "a@x.test"), mail("2001:db8:0:1::3", "a@x.test")},
			mail("2001:db8:0:2::1", "a@x.test")},
		{"client_net", "ipv4_prefix = 16\n", []Event{mail("192.0.2.1", "a@x.test"), mail("192.0.77.1", "a@x.test"), mail("192.0.200.1", "a@x.test")},
			mail("192.1.2.1", "a@x.test")},
		{"sender", "", []Event{mail("192.0.2.1", "Alice@x.test"), mail("192.0.2.2", "alice@X.TEST"), mail("192.0.2.3", "prvs=1234abcd=alice@x.test")},
			mail("192.0.2.1", "bob@x.test")},
		{"sender_domain", "", []Event{mail("192.0.2.1", "a@x.test"), mail("192.0.2.2", "b@x.test"), mail("192.0.2.3", "c@x.test")},
			mail("192.0.2.1", "a@y.test")},
		{"recipient", "", []Event{rcpt("192.0.2.1", "a@x.test", "Bob@dest.test"), rcpt("192.0.2.2", "", "bob@dest.test"), rcpt("192.0.2.3", "c@z.test", "bob@dest.test")},
			rcpt("192.0.2.1", "a@x.test", "carol@dest.test")},
		{"client_ip", "count = \"recipient\"\n", []Event{rcpt("192.0.2.1", "a@x.test", "b@dest.test"), rcpt("192.0.2.1", "a@x.test", "c@dest.test"), rcpt("192.0.2.1", "z@x.test", "b@dest.test")},
			rcpt("192.0.2.2", "a@x.test", "b@dest.test")},
	} {
		t.Run(tc.key+" "+strings.TrimSpace(tc.extra), func(t *testing.T) {
			r := New(loadRules(t, fmt.Sprintf("[[ratelimit]]\nname = \"r\"\nkey = %q\nrate = 1\nper = \"1h\"\nburst = 2\n%s", tc.key, tc.extra)),
				Env{Now: newClock().Now})
			for i, ev := range tc.same {
				x := r.Check(context.Background(), ev)
				if (x != nil) != (i == 2) {
					t.Fatalf("event %d %+v: refused %v", i, ev, x)
				}
			}
			if x := r.Check(context.Background(), tc.other); x != nil {
				t.Fatalf("other %+v refused: %s", tc.other, x.Reason)
			}
		})
	}
}

// TestRulesNoValue: an event without the key's value is not counted: the
// null sender by sender and sender_domain, a client without a known
// address by client keys, everyone by auth (no SMTP AUTH yet).
func TestRulesNoValue(t *testing.T) {
	for _, tc := range []struct {
		key string
		ev  Event
	}{
		{"sender", mail("192.0.2.1", "")},
		{"sender_domain", mail("192.0.2.1", "")},
		{"client_ip", Event{From: "a@x.test"}},
		{"client_net", Event{From: "a@x.test"}},
		{"auth", mail("192.0.2.1", "a@x.test")},
	} {
		r := New(loadRules(t, fmt.Sprintf("[[ratelimit]]\nname = \"r\"\nkey = %q\nrate = 1\nper = \"1h\"\nburst = 1\n", tc.key)), Env{})
		for range 3 {
			if x := r.Check(context.Background(), tc.ev); x != nil {
				t.Fatalf("%s: refused %+v: %s", tc.key, tc.ev, x.Reason)
			}
		}
	}
	// Once AUTH sets the identity, a rule by auth counts it.
	r := New(loadRules(t, "[[ratelimit]]\nname = \"r\"\nkey = \"auth\"\nrate = 1\nper = \"1h\"\nburst = 1\n"), Env{})
	ev := mail("192.0.2.1", "a@x.test")
	ev.Client.AuthUser = "Alice"
	r.Check(context.Background(), ev)
	if r.Check(context.Background(), ev) == nil {
		t.Fatal("auth: the second event of burst 1 passed")
	}
}

// TestRulesWhere: a message rule counts at MAIL only, a recipient rule at
// RCPT only.
func TestRulesWhere(t *testing.T) {
	r := New(loadRules(t, `
[[ratelimit]]
name = "msgs"
key = "client_ip"
rate = 1
per = "1h"
burst = 1

[[ratelimit]]
name = "rcpts"
key = "client_ip"
rate = 1
per = "1h"
burst = 3
count = "recipient"
`), Env{})
	ctx := context.Background()
	if x := r.Check(ctx, mail("192.0.2.1", "a@x.test")); x != nil {
		t.Fatal(x.Reason)
	}
	for i := range 3 {
		if x := r.Check(ctx, rcpt("192.0.2.1", "a@x.test", "b@dest.test")); x != nil {
			t.Fatalf("recipient %d: %s", i, x.Reason)
		}
	}
	if x := r.Check(ctx, rcpt("192.0.2.1", "a@x.test", "b@dest.test")); x == nil || x.Rule != "rcpts" {
		t.Fatalf("4th recipient: %+v, want refused by rcpts", x)
	}
	if x := r.Check(ctx, mail("192.0.2.1", "a@x.test")); x == nil || x.Rule != "msgs" {
		t.Fatalf("2nd message: %+v, want refused by msgs", x)
	}
}

// TestRulesExempt: trusted clients are not counted unless
// exempt_trusted = false; nor what the exempt list matches.
func TestRulesExempt(t *testing.T) {
	r := New(loadRules(t, `
[[ratelimit]]
name = "default"
key = "sender_domain"
rate = 1
per = "1h"
burst = 1
[ratelimit.exempt]
client_ips = ["198.51.100.0/24"]
helos = ["*.partner.test"]
senders = ["vip@x.test"]

[[ratelimit]]
name = "outbound"
key = "sender"
rate = 1
per = "1h"
burst = 1
count = "recipient"
exempt_trusted = false
[ratelimit.exempt]
rcpts = ["postmaster@dest.test", "@abuse.test"]
`), Env{})
	ctx := context.Background()
	trusted := mail("10.0.0.1", "a@x.test")
	trusted.Client.Trusted = true
	partner := mail("192.0.2.9", "a@x.test")
	partner.Client.Helo = "mx1.partner.test"
	for _, ev := range []Event{trusted, trusted, mail("198.51.100.7", "a@x.test"), mail("198.51.100.8", "a@x.test"),
		partner, partner, mail("192.0.2.1", "vip@x.test"), mail("192.0.2.1", "VIP@x.test")} {
		if x := r.Check(ctx, ev); x != nil {
			t.Fatalf("exempt %+v refused: %s", ev, x.Reason)
		}
	}
	if r.Check(ctx, mail("192.0.2.1", "a@x.test")) != nil {
		t.Fatal("the first counted message was refused")
	}
	if r.Check(ctx, mail("192.0.2.1", "b@x.test")) == nil {
		t.Fatal("the second counted message passed")
	}

	tr := func(to string) Event {
		ev := rcpt("10.0.0.1", "user@example.test", to)
		ev.Client.Trusted = true
		return ev
	}
	for _, to := range []string{"postmaster@dest.test", "Postmaster@DEST.test", "x@abuse.test", "y@abuse.test", "a@dest.test"} {
		if x := r.Check(ctx, tr(to)); x != nil {
			t.Fatalf("%s refused: %s", to, x.Reason)
		}
	}
	if x := r.Check(ctx, tr("b@dest.test")); x == nil || x.Rule != "outbound" {
		t.Fatalf("a trusted client's second recipient: %+v, want refused by outbound", x)
	}
}

// TestRulesExceeded: what a refusal says, and the metrics.
func TestRulesExceeded(t *testing.T) {
	reg := prometheus.NewRegistry()
	m := NewMetrics(reg)
	r := New(loadRules(t, `
[[ratelimit]]
name = "per-net"
key = "client_net"
rate = 100
per = "1h"
burst = 1
action = "disconnect"

[[ratelimit]]
name = "idle"
key = "sender"
rate = 1
per = "1m"
`), Env{Metrics: m})
	if n := testutil.CollectAndCount(m.refused); n != 2 {
		t.Errorf("%d rule series at start, want 2", n)
	}
	ctx := context.Background()
	r.Check(ctx, mail("192.0.2.1", "a@x.test"))
	x := r.Check(ctx, mail("192.0.2.1", "b@x.test"))
	want := &Exceeded{Rule: "per-net", Disconnect: true, Reason: "rate limit per-net exceeded: client_net 192.0.2.0/24 over 100 per 1h0m0s, burst 1"}
	if x == nil || *x != *want {
		t.Fatalf("got %+v, want %+v", x, want)
	}
	if n := testutil.ToFloat64(m.refused.WithLabelValues("per-net")); n != 1 {
		t.Errorf("per-net refused %v, want 1", n)
	}
	if n := testutil.ToFloat64(m.refused.WithLabelValues("idle")); n != 0 {
		t.Errorf("idle refused %v, want 0", n)
	}
}

type failingStore struct{}

func (failingStore) Take(context.Context, Key, Limit, time.Time) (bool, error) {
	return false, errors.New("connection refused")
}

// TestRulesStoreFails: a store that fails passes every event (fail open),
// counted.
func TestRulesStoreFails(t *testing.T) {
	m := NewMetrics(prometheus.NewRegistry())
	log := &logBuffer{}
	r := New(loadRules(t, "[[ratelimit]]\nname = \"r\"\nkey = \"client_ip\"\nrate = 1\nper = \"1h\"\nburst = 1\n"),
		Env{Store: failingStore{}, Metrics: m, Logger: logger(log)})
	for range 3 {
		if x := r.Check(context.Background(), mail("192.0.2.1", "a@x.test")); x != nil {
			t.Fatal(x.Reason)
		}
	}
	if n := testutil.ToFloat64(m.faults.WithLabelValues("store")); n != 3 {
		t.Errorf("store faults %v, want 3", n)
	}
	if !strings.Contains(log.String(), "fail open") {
		t.Errorf("log: %q", log)
	}
}
