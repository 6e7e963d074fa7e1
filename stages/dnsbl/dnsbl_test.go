package dnsbl

import (
	"context"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

func newDNSBL(t *testing.T, srv *dnstest.Server, config string) *DNSBL {
	t.Helper()
	f, err := New(stages.Env{DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	return f.(*DNSBL)
}

func connect(ip string) *stages.Transaction {
	return &stages.Transaction{Client: stages.Client{Addr: netip.MustParseAddr(ip), Helo: "client.example.test"}}
}

func run(t *testing.T, f *DNSBL, p stages.Phase, tx *stages.Transaction) stages.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := f.Run(ctx, p, tx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return v
}

// zone is what the test lists publish. 192.0.2.99 is on the SBL and XBL
// parts of a zen-like list, 192.0.2.10 on its PBL part only.
var zone = dnstest.Zone{
	"99.2.0.192.zen.spamhaus.test": {"A 127.0.0.2", "A 127.0.0.4"},
	"10.2.0.192.zen.spamhaus.test": {"A 127.0.0.10"},
	"1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.zen.spamhaus.test": {"A 127.0.0.3"},
	"99.2.0.192.bits.test":         {"A 127.0.0.6"}, // bits 2 and 4
	"7.2.0.192.list.dnswl.test":    {"A 127.0.10.2"},
	"99.2.0.192.slow.test":         {"TIMEOUT"},
	"99.2.0.192.garbage.test":      {"A 10.1.2.3"},
	"99.2.0.192.refused.test":      {"A 127.255.255.254"},
	"spammer.test.dbl.test":        {"A 127.0.1.2"},
	"bad-helo.test.dbl.test":       {"A 127.0.1.2"},
	"xn--bcher-kva.test.dbl.test":  {"A 127.0.1.2"},
	"spammer.test.rhsbl-any.test":  {"A 127.0.0.2"},
	"client.example.test.dbl.test": {"SERVFAIL"},
}

const zen = `{"zone": "zen.spamhaus.test", "weight": 3,
	"labels": {"127.0.0.2": "SBL", "127.0.0.3": "SBL CSS", "127.0.0.4-127.0.0.7": "XBL", "127.0.0.10-127.0.0.11": "PBL"}}`

func TestIPLists(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	// A listing carries the list's reply whatever the list's action, for
	// [stage.results] listed = "reject"; an accepting allow-list drops it.
	blocked := &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Client host blocked"}
	tests := []struct {
		name   string
		config string
		ip     string
		want   stages.Verdict
	}{
		{"IPv4 listed, every code named", `{"list": [` + zen + `]}`, "192.0.2.99",
			stages.Verdict{Score: 3, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.2,127.0.0.4 (SBL,XBL)"}},
		{"IPv6 nibbles", `{"list": [` + zen + `]}`, "2001:db8::1",
			stages.Verdict{Score: 3, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.3 (SBL CSS)"}},
		{"IPv4-mapped IPv6 is looked up as IPv4", `{"list": [` + zen + `]}`, "::ffff:192.0.2.99",
			stages.Verdict{Score: 3, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.2,127.0.0.4 (SBL,XBL)"}},
		{"not listed", `{"list": [` + zen + `]}`, "192.0.2.1",
			stages.Verdict{Result: "clean"}},
		{"returns leaves out other codes", `{"list": [{"zone": "zen.spamhaus.test", "weight": 3, "returns": ["127.0.0.2-127.0.0.3", "127.0.0.9"]}]}`, "192.0.2.10",
			stages.Verdict{Result: "clean"}},
		{"returns keeps its codes", `{"list": [{"zone": "zen.spamhaus.test", "weight": 3, "returns": ["127.0.0.4-127.0.0.7"]}]}`, "192.0.2.99",
			stages.Verdict{Score: 3, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.4"}},
		{"mask matches a bit", `{"list": [{"zone": "bits.test", "weight": 1, "mask": 4}]}`, "192.0.2.99",
			stages.Verdict{Score: 1, Result: "listed", Reply: blocked, Reason: "bits.test=127.0.0.6"}},
		{"mask misses", `{"list": [{"zone": "bits.test", "weight": 1, "mask": 8}]}`, "192.0.2.99",
			stages.Verdict{Result: "clean"}},
		{"allow-list carries negative weight", `{"list": [` + zen + `, {"zone": "list.dnswl.test", "weight": -5}]}`, "192.0.2.7",
			stages.Verdict{Score: -5, Result: "allowed", Reason: "list.dnswl.test=127.0.10.2"}},
		{"block and allow add up", `{"list": [{"zone": "zen.spamhaus.test", "weight": 3}, {"zone": "bits.test", "weight": -1}]}`, "192.0.2.99",
			stages.Verdict{Score: 2, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.2,127.0.0.4; bits.test=127.0.0.6"}},
		{"list's own action with generic reply", `{"list": [{"zone": "zen.spamhaus.test", "weight": 3, "action": "reject", "returns": ["127.0.0.2"]}]}`, "192.0.2.99",
			stages.Verdict{Action: stages.Reject, Score: 3, Result: "listed", Reason: "zen.spamhaus.test=127.0.0.2",
				Reply: &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Client host blocked"}}},
		{"list's own reply with placeholders", `{"list": [{"zone": "zen.spamhaus.test", "action": "tempfail", "reply": "Client {ip} listed in {zone}; see https://check.example/{ip}"}]}`, "2001:db8::1",
			stages.Verdict{Action: stages.TempFail, Result: "listed", Reason: "zen.spamhaus.test=127.0.0.3",
				Reply: &stages.Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Client 2001:db8::1 listed in zen.spamhaus.test; see https://check.example/2001:db8::1"}}},
		{"accepting allow-list outranks a reject", `{"list": [{"zone": "zen.spamhaus.test", "weight": 3, "action": "reject"}, {"zone": "bits.test", "action": "accept"}]}`, "192.0.2.99",
			stages.Verdict{Action: stages.Accept, Score: 3, Result: "listed", Reason: "zen.spamhaus.test=127.0.0.2,127.0.0.4; bits.test=127.0.0.6"}},
		{"one zone twice: reject some codes, score others", `{"list": [
			{"zone": "zen.spamhaus.test", "action": "reject", "returns": ["127.0.0.2-127.0.0.7"]},
			{"zone": "zen.spamhaus.test", "weight": 1, "returns": ["127.0.0.10-127.0.0.11"]}]}`, "192.0.2.10",
			stages.Verdict{Score: 1, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.10"}},
		{"timeout skipped (fail open)", `{"dns_timeout": "200ms", "list": [` + zen + `, {"zone": "slow.test", "weight": 10}]}`, "192.0.2.99",
			stages.Verdict{Score: 3, Result: "listed", Reply: blocked, Reason: "zen.spamhaus.test=127.0.0.2,127.0.0.4 (SBL,XBL); skipped slow.test: lookup 99.2.0.192.slow.test. A: temporary DNS failure"}},
		{"answer outside 127/8 skipped", `{"list": [{"zone": "garbage.test", "weight": 10}]}`, "192.0.2.99",
			stages.Verdict{Result: "clean", Reason: "skipped garbage.test: answer 10.1.2.3 is not a listing code"}},
		{"query refused code skipped", `{"list": [{"zone": "refused.test", "weight": 10, "returns": ["127.0.0.0-127.255.255.255"]}]}`, "192.0.2.99",
			stages.Verdict{Result: "clean", Reason: "skipped refused.test: answer 127.255.255.254 is not a listing code"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newDNSBL(t, srv, tt.config)
			v := run(t, f, stages.Connect, connect(tt.ip))
			// A timeout's reason goes on with the server's address.
			if i := strings.Index(v.Reason, "temporary DNS failure"); i >= 0 {
				v.Reason = v.Reason[:i+len("temporary DNS failure")]
			}
			if !reflect.DeepEqual(v, tt.want) {
				t.Errorf("verdict\n %+v %v\nwant\n %+v %v", v, v.Reply, tt.want, tt.want.Reply)
			}
		})
	}
}

func TestFailClosed(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	for _, l := range []string{"slow.test", "garbage.test", "refused.test"} {
		f := newDNSBL(t, srv, fmt.Sprintf(`{"dns_timeout": "200ms", "list": [`+zen+`, {"zone": %q, "fail_closed": true}]}`, l))
		_, err := f.Run(context.Background(), stages.Connect, connect("192.0.2.99"))
		if err == nil || !strings.HasPrefix(err.Error(), l+": ") {
			t.Errorf("%s: error %v; want one naming the list", l, err)
		}
	}
}

// TestDNSTimeout: dns_timeout defaults to the gateway's [dns] timeout
// (Env.DNSTimeout), and the key overrides it either way. slow.test never
// answers, so the stage takes one timeout and then skips that list. The
// timeout that must win is always the longest of those in play, so a
// lower bound on the time taken proves it won, however loaded the
// machine; the one case where it is the shortest has an upper bound far
// below the others.
func TestDNSTimeout(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	tests := []struct {
		name     string
		env      time.Duration
		config   string
		min, max time.Duration
	}{
		{"env, over the default", defaultDNSTimeout + time.Second, `{"list": [{"zone": "slow.test"}]}`, defaultDNSTimeout + time.Second, 0},
		{"key below env", time.Minute, `{"dns_timeout": "100ms", "list": [{"zone": "slow.test"}]}`, 100 * time.Millisecond, 30 * time.Second},
		{"key above env and the default", 100 * time.Millisecond, `{"dns_timeout": "3s", "list": [{"zone": "slow.test"}]}`, 3 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f, err := New(stages.Env{DNSServers: []string{srv.Addr()}, DNSTimeout: tt.env}, stages.JSONConfig([]byte(tt.config)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			v, err := f.Run(ctx, stages.Connect, connect("192.0.2.99"))
			took := time.Since(start)
			if err != nil || !strings.Contains(v.Reason, "slow.test") {
				t.Errorf("verdict %+v, %v; want the skipped list named", v, err)
			}
			if took < tt.min || (tt.max > 0 && took >= tt.max) {
				t.Errorf("lookup gave up after %v; want a timeout of %v", took, tt.min)
			}
		})
	}
}

func TestRHSBL(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	f := newDNSBL(t, srv, `{"list": [
		{"zone": "dbl.test", "type": "domain", "helo": true, "weight": 4, "labels": {"127.0.1.2": "spam domain"}, "action": "reject"},
		{"zone": "rhsbl-any.test", "type": "domain", "weight": 1}
	]}`)
	if info := f.Info(); info.Phases != stages.Mail {
		t.Errorf("phases %v; want mail only", info.Phases)
	}
	tests := []struct {
		from, helo string
		want       stages.Verdict
	}{
		{"someone@Spammer.TEST", "mx.example.test", stages.Verdict{Action: stages.Reject, Score: 5, Result: "listed",
			Reason: "dbl.test(spammer.test)=127.0.1.2 (spam domain); rhsbl-any.test(spammer.test)=127.0.0.2",
			Reply:  &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Sender domain blocked"}}},
		{"a@good.test", "bad-helo.test", stages.Verdict{Action: stages.Reject, Score: 4, Result: "listed",
			Reason: "dbl.test(bad-helo.test)=127.0.1.2 (spam domain)",
			Reply:  &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Sender domain blocked"}}},
		{"a@bücher.test", "[192.0.2.1]", stages.Verdict{Action: stages.Reject, Score: 4, Result: "listed",
			Reason: "dbl.test(xn--bcher-kva.test)=127.0.1.2 (spam domain)",
			Reply:  &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: "Sender domain blocked"}}},
		{"", "localhost", stages.Verdict{Result: "clean"}},
		{"a@[192.0.2.1]", "192.0.2.1", stages.Verdict{Result: "clean"}},
	}
	for _, tt := range tests {
		tx := &stages.Transaction{From: tt.from, Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.99"), Helo: tt.helo}}
		v := run(t, f, stages.Mail, tx)
		if !reflect.DeepEqual(v, tt.want) {
			t.Errorf("from %q helo %q: verdict\n %+v %v\nwant\n %+v %v", tt.from, tt.helo, v, v.Reply, tt.want, tt.want.Reply)
		}
	}
	// A HELO lookup that fails is skipped like any other.
	v := run(t, f, stages.Mail, &stages.Transaction{From: "a@good.test", Client: stages.Client{Helo: "client.example.test"}})
	if v.Result != "clean" || !strings.HasPrefix(v.Reason, "skipped dbl.test: lookup client.example.test.dbl.test. A: temporary DNS failure") {
		t.Errorf("SERVFAIL: %+v", v)
	}
}

func TestCache(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"99.2.0.192.zen.spamhaus.test": {"300 A 127.0.0.2"},
		"98.2.0.192.zen.spamhaus.test": {"1 A 127.0.0.2"},
	})
	f := newDNSBL(t, srv, `{"list": [`+zen+`]}`)
	for _, ip := range []string{"192.0.2.99", "192.0.2.1"} { // listed, and NXDOMAIN
		want := run(t, f, stages.Connect, connect(ip))
		before := srv.Queries()
		again := run(t, f, stages.Connect, connect(ip))
		if srv.Queries() != before || !reflect.DeepEqual(again, want) {
			t.Errorf("%s again: %d queries, %+v; want none, %+v", ip, srv.Queries()-before, again, want)
		}
	}

	// An answer is kept no longer than its TTL.
	run(t, f, stages.Connect, connect("192.0.2.98"))
	// A wait for the clock (the TTL of 1s to pass), not for an event: on
	// a loaded machine it only gets longer, which is as good.
	time.Sleep(1100 * time.Millisecond)
	before := srv.Queries()
	if v := run(t, f, stages.Connect, connect("192.0.2.98")); v.Result != "listed" || srv.Queries() != before+1 {
		t.Errorf("after the TTL: %+v, %d queries; want listed, 1 query", v, srv.Queries()-before)
	}

	// cache_size = 0: every lookup asks.
	f = newDNSBL(t, srv, `{"cache_size": 0, "list": [`+zen+`]}`)
	run(t, f, stages.Connect, connect("192.0.2.99"))
	before = srv.Queries()
	run(t, f, stages.Connect, connect("192.0.2.99"))
	if srv.Queries() != before+1 {
		t.Errorf("without a cache: %d queries; want 1", srv.Queries()-before)
	}
}

func TestInfo(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	f := newDNSBL(t, srv, `{"list": [`+zen+`, {"zone": "dbl.test", "type": "domain"}]}`)
	want := stages.Info{Kind: "dnsbl", Version: "1", Phases: stages.Connect | stages.Mail, Needs: stages.NeedEnvelope,
		Results: []string{"listed", "allowed", "clean"}}
	if !reflect.DeepEqual(f.Info(), want) {
		t.Errorf("info %+v; want %+v", f.Info(), want)
	}
	// No client address (a test run without -client-ip): nothing to ask.
	v := run(t, f, stages.Connect, &stages.Transaction{})
	if v.Result != "clean" || v.Score != 0 {
		t.Errorf("no address: %+v", v)
	}
}

func TestReverse(t *testing.T) {
	tests := []struct{ ip, want string }{
		{"192.0.2.1", "1.2.0.192"},
		{"127.0.0.2", "2.0.0.127"},
		// RFC 5782 §2.4's example.
		{"2001:db8:1:2:3:4:567:89ab", "b.a.9.8.7.6.5.0.4.0.0.0.3.0.0.0.2.0.0.0.1.0.0.0.8.b.d.0.1.0.0.2"},
	}
	for _, tt := range tests {
		if got := reverse(netip.MustParseAddr(tt.ip)); got != tt.want {
			t.Errorf("reverse(%s) = %s; want %s", tt.ip, got, tt.want)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ config, want string }{
		{`{}`, `list: expect at least one`},
		{`{"list": [{"zone": ""}]}`, `list[0]: zone: unexpected ""`},
		{`{"list": [{"zone": "a..b"}]}`, `list[0]: zone: unexpected "a..b"`},
		{`{"list": [{"zone": "a.test", "type": "rhsbl"}]}`, `list[0]: type: unexpected "rhsbl"; expect ip or domain`},
		{`{"list": [{"zone": "a.test", "helo": true}]}`, `helo: only for type = "domain"`},
		{`{"list": [{"zone": "a.test", "returns": ["127.0.0.300"]}]}`, `list[0]: returns[0]: unexpected "127.0.0.300"`},
		{`{"list": [{"zone": "a.test", "labels": {"10.0.0.1": "x"}}]}`, `list[0]: labels: unexpected "10.0.0.1"`},
		{`{"list": [{"zone": "a.test", "action": "block"}]}`, `list[0]: action: unexpected "block"; expect continue, tag, quarantine, tempfail, reject or accept`},
		{`{"list": [{"zone": "a.test", "reply": "x"}]}`, `reply: only with action = "reject" or "tempfail"`},
		{`{"list": [{"zone": "a.test", "action": "reject", "reply": "x\r\n250 ok"}]}`, `reply: expect one line of printable ASCII`},
		{`{"cache_size": -1, "list": [{"zone": "a.test"}]}`, `cache_size: unexpected -1`},
		{`{"list": [{"zone": "a.test", "weigth": 1}]}`, `list: unknown key "weigth"`},
	}
	for _, tt := range tests {
		_, err := New(stages.Env{DNSServers: []string{"127.0.0.1:53"}}, stages.JSONConfig([]byte(tt.config)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v; want one containing %q", tt.config, err, tt.want)
		}
	}
}

func FuzzLookupDomain(f *testing.F) {
	for _, s := range []string{"a@b.example", "x@[1.2.3.4]", "bücher.test", "a@b@c.d", "..", "a@-x-.test"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d := lookupDomain(s)
		for i := 0; i < len(d); i++ {
			c := d[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-') {
				t.Fatalf("lookupDomain(%q) = %q", s, d)
			}
		}
	})
}

// A list slower than the stage's own deadline is skipped before that
// deadline passes, so the stage still answers (fail open) rather than
// running into its on_error.
func TestListsGiveUpBeforeTheStageDeadline(t *testing.T) {
	srv := dnstest.NewServer(t, zone)
	f, err := New(stages.Env{DNSServers: []string{srv.Addr()}, DNSTimeout: 10 * time.Second}, stages.JSONConfig([]byte(`{"list": [{"zone": "slow.test"}]}`)))
	if err != nil {
		t.Fatal(err)
	}
	// The lists stop at 90% of the stage's time; the rest (here 300ms) is
	// for a loaded machine to build the verdict.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	v, err := f.Run(ctx, stages.Connect, connect("192.0.2.99"))
	if err != nil || ctx.Err() != nil {
		t.Fatalf("Run: %v (deadline passed: %v)", err, ctx.Err())
	}
	if v.Result != "clean" || !strings.Contains(v.Reason, "slow.test") {
		t.Fatalf("verdict %+v; want clean with the skipped list named", v)
	}
}
