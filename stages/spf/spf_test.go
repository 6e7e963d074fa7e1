package spf

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// testServer serves the policies the stage tests use.
func testServer(t testing.TB) *dnstest.Server {
	return dnstest.NewServer(t, dnstest.Zone{
		"pass.example.com":    {`TXT "v=spf1 ip4:192.0.2.0/24 -all"`},
		"fail.example.com":    {`TXT "v=spf1 ip4:192.0.2.1 -all exp=why.example.com"`},
		"why.example.com":     {`TXT "Not from here, %{i}."`},
		"plain.example.com":   {`TXT "v=spf1 -all"`},
		"soft.example.com":    {`TXT "v=spf1 ~all"`},
		"neutral.example.com": {`TXT "v=spf1 ip4:198.51.100.1"`},
		"broken.example.com":  {`TXT "v=spf1 ip4:300.1.1.1 -all"`},
		"slow.example.com":    {"TIMEOUT"},
		"mail.example.net":    {`TXT "v=spf1 a -all"`, "A 192.0.2.10"},
		"nospf.example.com":   {"A 192.0.2.1"},
		"weird(.example.com":  {`TXT "v=spf1 -all exp=x.example.com"`},
		"x.example.com":       {`TXT "a\"b(c)\\d %{l}"`},
	})
}

func tx(ip, helo, from string) *stages.Transaction {
	return &stages.Transaction{
		QueueID: "Q1",
		Client:  stages.Client{Addr: netip.MustParseAddr(ip), Helo: helo},
		From:    from,
	}
}

// newFilter builds the stage from a JSON config, as the plugin host sends it.
func newFilter(t testing.TB, srv *dnstest.Server, config string) *Filter {
	t.Helper()
	f, err := New(stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatal(err)
	}
	return f.(*Filter)
}

func TestMailVerdicts(t *testing.T) {
	srv := testServer(t)
	tests := []struct {
		name, config, ip, helo, from string
		action                       stages.Action
		score                        float64
		result, reason, reply        string
	}{
		{
			name: "pass", config: `{}`, ip: "192.0.2.7", helo: "mail.example.net", from: "joe@pass.example.com",
			result: "pass", reason: "spf=pass smtp.mailfrom=pass.example.com; spf=fail smtp.helo=mail.example.net",
		},
		{
			name: "fail scores by default", config: `{}`, ip: "192.0.2.99", helo: "mail.example.net", from: "joe@fail.example.com",
			score: 5, result: "fail", reason: "spf=fail smtp.mailfrom=fail.example.com; spf=fail smtp.helo=mail.example.net",
			reply: "550 5.7.23 SPF fail: Not from here, 192.0.2.99.",
		},
		{
			name: "fail without explanation", config: `{"check_helo": false}`, ip: "2001:db8::1", helo: "h.example.net", from: "joe@plain.example.com",
			score: 5, result: "fail", reason: "spf=fail smtp.mailfrom=plain.example.com",
			reply: "550 5.7.23 SPF fail: plain.example.com does not designate 2001:db8::1 as permitted sender",
		},
		{
			name: "explanation sanitised", config: `{"check_helo": false}`, ip: "192.0.2.99", helo: "h.example.net", from: "a\x01b@weird(.example.com",
			score: 5, result: "fail", reason: `spf=fail smtp.mailfrom="weird(.example.com"`,
			reply: `550 5.7.23 SPF fail: a"b(c)\d ab`,
		},
		{
			name: "softfail score table", config: `{"score": {"softfail": 3.5}, "check_helo": false}`, ip: "192.0.2.7", helo: "h.example.net", from: "joe@soft.example.com",
			score: 3.5, result: "softfail", reason: "spf=softfail smtp.mailfrom=soft.example.com",
			reply: "550 5.7.23 SPF softfail: soft.example.com does not designate 192.0.2.7 as permitted sender",
		},
		{
			name: "permerror", config: `{"check_helo": false}`, ip: "192.0.2.7", helo: "h.example.net", from: "joe@broken.example.com",
			result: "permerror",
			reason: `spf=permerror reason="SPF record of broken.example.com: \"ip4:300.1.1.1\": invalid address \"300.1.1.1\"" smtp.mailfrom=broken.example.com`,
			reply:  "550 5.7.24 SPF permerror: the SPF policy of broken.example.com could not be evaluated",
		},
		{
			name: "temperror is a result", config: `{"check_helo": false, "dns_timeout": "100ms"}`, ip: "192.0.2.7", helo: "h.example.net", from: "joe@slow.example.com",
			result: "temperror",
			reply:  "451 4.7.24 SPF temperror: the SPF policy of slow.example.com could not be evaluated",
		},
		{
			name: "none", config: `{}`, ip: "192.0.2.7", helo: "[192.0.2.7]", from: "joe@nospf.example.com",
			result: "none", reason: `spf=none reason="no SPF record for nospf.example.com" smtp.mailfrom=nospf.example.com; spf=none reason="\"[192.0.2.7]\" is not a domain name" smtp.helo="[192.0.2.7]"`,

			reply: "550 5.7.23 SPF none: nospf.example.com does not designate 192.0.2.7 as permitted sender",
		},
		{
			name: "null sender checks postmaster@helo", config: `{}`, ip: "192.0.2.10", helo: "mail.example.net", from: "",
			result: "pass", reason: "spf=pass smtp.helo=mail.example.net",
		},
		{
			name: "IPv4-mapped client", config: `{"check_helo": false}`, ip: "::ffff:192.0.2.7", helo: "h.example.net", from: "joe@pass.example.com",
			result: "pass", reason: "spf=pass smtp.mailfrom=pass.example.com",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFilter(t, srv, tt.config)
			v, err := f.Run(context.Background(), stages.Mail, tx(tt.ip, tt.helo, tt.from))
			if err != nil {
				t.Fatalf("error %v: SPF problems are results", err)
			}
			if v.Action != tt.action || v.Score != tt.score || v.Result != tt.result {
				t.Errorf("verdict %v/%v/%q, want %v/%v/%q", v.Action, v.Score, v.Result, tt.action, tt.score, tt.result)
			}
			if tt.reason != "" && v.Reason != tt.reason {
				t.Errorf("reason\n got %s\nwant %s", v.Reason, tt.reason)
			}
			reply := ""
			if v.Reply != nil {
				reply = v.Reply.String()
			}
			if reply != tt.reply {
				t.Errorf("reply %q, want %q", reply, tt.reply)
			}
			if len(v.Edits) != 0 {
				t.Errorf("edits at MAIL: %v", v.Edits)
			}
		})
	}
}

func TestDataReceivedSPF(t *testing.T) {
	srv := testServer(t)
	f := newFilter(t, srv, `{"dns_timeout": "100ms"}`)
	tests := []struct {
		ip, helo, from string
		header         string
	}{
		{"192.0.2.99", "mail.example.net", "joe@fail.example.com",
			`fail (mx.example.test: domain of joe@fail.example.com does not designate 192.0.2.99 as permitted sender) client-ip=192.0.2.99; envelope-from="joe@fail.example.com"; helo=mail.example.net; receiver=mx.example.test; identity=mailfrom; mechanism=-all;`},
		{"192.0.2.7", "mail.example.net", "joe@neutral.example.com",
			`neutral (mx.example.test: 192.0.2.7 is neither permitted nor denied by domain of joe@neutral.example.com) client-ip=192.0.2.7; envelope-from="joe@neutral.example.com"; helo=mail.example.net; receiver=mx.example.test; identity=mailfrom; mechanism=default;`},
		{"2001:db8::5", "[2001:db8::5]", "",
			`none (mx.example.test: domain of postmaster@[2001:db8::5] does not designate permitted sender hosts) client-ip="2001:db8::5"; envelope-from=""; helo="[2001:db8::5]"; receiver=mx.example.test; identity=helo;`},
		{"192.0.2.7", "h.example.net", "joe@slow.example.com",
			`temperror (mx.example.test: temporary error in processing during lookup of joe@slow.example.com) client-ip=192.0.2.7; envelope-from="joe@slow.example.com"; helo=h.example.net; receiver=mx.example.test; identity=mailfrom; problem="TXT lookup of slow.example.com: lookup slow.example.com. TXT: temporary DNS failure: 127.0.0.1:`},
	}
	for _, tt := range tests {
		txn := tx(tt.ip, tt.helo, tt.from)
		mail, _ := f.Run(context.Background(), stages.Mail, txn)
		before := srv.Queries()
		v, err := f.Run(context.Background(), stages.Data, txn)
		if err != nil {
			t.Fatal(err)
		}
		// Even a timed-out query reaches the server and counts.
		if srv.Queries() != before {
			t.Errorf("%s: DATA evaluated again (%d queries)", tt.from, srv.Queries()-before)
		}
		if v.Action != stages.Continue || v.Score != 0 || v.Result != mail.Result || v.Reason != mail.Reason {
			t.Errorf("%s: DATA verdict %+v, MAIL %+v", tt.from, v, mail)
		}
		if len(v.Edits) != 1 || v.Edits[0].Op != stages.HeaderInsert || v.Edits[0].Index != 0 || v.Edits[0].Name != "Received-SPF" {
			t.Fatalf("%s: edits %+v", tt.from, v.Edits)
		}
		if got := v.Edits[0].Value; !strings.HasPrefix(got, tt.header) || strings.ContainsAny(got, "\r\n") {
			t.Errorf("Received-SPF\n got %s\nwant %s", got, tt.header)
		}
	}

	// A DATA phase without a MAIL phase before it (a restarted plugin)
	// evaluates on its own.
	g := newFilter(t, srv, `{}`)
	v, _ := g.Run(context.Background(), stages.Data, tx("192.0.2.7", "h.example.net", "joe@pass.example.com"))
	if len(v.Edits) != 1 || !strings.HasPrefix(v.Edits[0].Value, "pass (") {
		t.Errorf("DATA alone: %+v", v)
	}
}

func TestResolverCache(t *testing.T) {
	srv := testServer(t)
	f := newFilter(t, srv, `{"check_helo": false}`)
	f.Run(context.Background(), stages.Mail, tx("192.0.2.7", "h.example.net", "a@pass.example.com"))
	before := srv.Queries()
	// Another client: not in the memo, but every answer is cached.
	v, _ := f.Run(context.Background(), stages.Mail, tx("192.0.2.8", "h.example.net", "a@pass.example.com"))
	if v.Result != "pass" || srv.Queries() != before {
		t.Errorf("result %s after %d more queries, want pass from the cache", v.Result, srv.Queries()-before)
	}
	g := newFilter(t, srv, `{"check_helo": false, "cache_size": 0}`)
	g.Run(context.Background(), stages.Mail, tx("192.0.2.7", "h.example.net", "a@pass.example.com"))
	before = srv.Queries()
	g.Run(context.Background(), stages.Mail, tx("192.0.2.8", "h.example.net", "a@pass.example.com"))
	if srv.Queries() == before {
		t.Error("cache_size = 0 still cached")
	}
}

func TestConfigErrors(t *testing.T) {
	srv := testServer(t)
	// Each names its key (a ConfigError), so the gateway points at the
	// key's line rather than the stage's.
	tests := []struct{ config, err string }{
		{`{"score": {"fial": 1}}`, "score: fial: unknown result; expect pass, fail, softfail, neutral, none, permerror or temperror"},
		{`{"score": {"none ": 1}}`, `score: none : unknown result`},
		// The keys [stage.results] replaced, refused with what to write there.
		{`{"action": {"fail": "reject", "temperror": "tempfail"}}`, `action: replaced by [stage.results]: fail = "reject", temperror = "tempfail"`},
		{`{"reject_fail": true}`, `reject_fail: replaced by [stage.results]: fail = "reject"`},
		{`{"reject_fail": false}`, `reject_fail: replaced by [stage.results]; remove the key`},
		{`{"dns_timeout": "0s"}`, `dns_timeout: expect a duration above 0`},
		{`{"cache_size": -1}`, `cache_size: unexpected -1`},
		{`{"check_hello": true}`, `check_hello: unknown key`},
	}
	for _, tt := range tests {
		_, err := New(stages.Env{DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(tt.config)))
		var ce *stages.ConfigError
		if !errors.As(err, &ce) || !strings.HasPrefix(tt.err, ce.Key+": ") || !strings.Contains(err.Error(), tt.err) {
			t.Errorf("%s: error %v, want %q", tt.config, err, tt.err)
		}
	}
}

// TestPluginRoundTrip runs the stage over the real plugin protocol.
func TestPluginRoundTrip(t *testing.T) {
	srv := testServer(t)
	st, err := sdktest.Stage(t, func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		return New(env, cfg)
	}, `{}`)
	if err != nil {
		t.Fatal(err)
	}
	txn := tx("192.0.2.99", "mail.example.net", "joe@fail.example.com")
	v, err := st.Run(context.Background(), stages.Mail, txn)
	if err != nil || v.Action != stages.Continue || v.Score != 5 || v.Reply == nil || v.Reply.Code != 550 || v.Reply.Enhanced != [3]int{5, 7, 23} {
		t.Fatalf("MAIL over the plugin protocol: %+v %v", v, err)
	}
	v, err = st.Run(context.Background(), stages.Data, txn)
	if err != nil || len(v.Edits) != 1 || !strings.HasPrefix(v.Edits[0].Value, "fail (mx.example.test: ") {
		t.Fatalf("DATA over the plugin protocol: %+v %v", v, err)
	}
	if _, err := sdktest.Stage(t, New, `{"action": {"fail": "reject"}}`); err == nil || !strings.Contains(err.Error(), `config: action: replaced by [stage.results]: fail = "reject"`) {
		t.Errorf("old key over the plugin protocol: %v", err)
	}
}

// BenchmarkSPFEvaluate evaluates a typical record (include, ip4, mx)
// against the test DNS server with the resolver cache warm. Each iteration
// uses a new client address, so the per-transaction memo does not answer
// and every mechanism is evaluated.
func BenchmarkSPFEvaluate(b *testing.B) {
	srv := dnstest.NewServer(b, dnstest.Zone{
		"example.com":      {`TXT "v=spf1 include:_spf.example.net ip4:198.51.100.0/24 mx -all"`, "MX 10 mx1.example.com.", "MX 20 mx2.example.com."},
		"_spf.example.net": {`TXT "v=spf1 ip4:203.0.113.0/24 ip6:2001:db8::/32 ~all"`},
		"mx1.example.com":  {"A 192.0.2.1"},
		"mx2.example.com":  {"A 192.0.2.2"},
	})
	f, err := New(stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(`{"check_helo": false}`)))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		// 16M addresses before one repeats: far more than the memo holds.
		ip := netip.AddrFrom4([4]byte{192, byte(i >> 16), byte(i >> 8), byte(i)})
		v, _ := f.Run(ctx, stages.Mail, &stages.Transaction{Client: stages.Client{Addr: ip, Helo: "h.example.net"}, From: "joe@example.com"})
		if v.Result != "pass" && v.Result != "fail" {
			b.Fatalf("result %s", v.Result)
		}
	}
}

// TestNoDNSServer: with no server answering at all, the check still ends in
// a verdict (temperror), not a stage error.
func TestNoDNSServer(t *testing.T) {
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close() // bound but never read: queries go unanswered
	f, err := New(stages.Env{DNSServers: []string{pc.LocalAddr().String()}}, stages.JSONConfig([]byte(`{"dns_timeout": "100ms"}`)))
	if err != nil {
		t.Fatal(err)
	}
	v, err := f.Run(context.Background(), stages.Mail, tx("192.0.2.7", "h.example.net", "joe@example.com"))
	if err != nil || v.Result != "temperror" || v.Action != stages.Continue || v.Score != 0 {
		t.Fatalf("verdict %+v, error %v; want temperror, continue, no error", v, err)
	}
	if !strings.HasPrefix(v.Reason, `spf=temperror reason="TXT lookup of example.com: `) || !strings.Contains(v.Reason, `" smtp.mailfrom=example.com; `) {
		t.Errorf("reason %q", v.Reason)
	}
}

// TestDNSTimeout: dns_timeout defaults to the gateway's [dns] timeout
// (Env.DNSTimeout), and the key overrides it either way. The lookup of
// slow.example.com is never answered, so the check takes one timeout. The
// timeout that must win is always the longest of those in play, so a
// lower bound on the time taken proves it won, however loaded the
// machine; the one case where it is the shortest has an upper bound far
// below the others.
func TestDNSTimeout(t *testing.T) {
	srv := testServer(t)
	tests := []struct {
		name     string
		env      time.Duration
		config   string
		min, max time.Duration
	}{
		{"env, over the default", defaultDNSTimeout + time.Second, `{"check_helo": false}`, defaultDNSTimeout + time.Second, 0},
		{"key below env", time.Minute, `{"check_helo": false, "dns_timeout": "100ms"}`, 100 * time.Millisecond, 30 * time.Second},
		{"key above env and the default", 100 * time.Millisecond, `{"check_helo": false, "dns_timeout": "4s"}`, 4 * time.Second, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			env := stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}, DNSTimeout: tt.env}
			f, err := New(env, stages.JSONConfig([]byte(tt.config)))
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			defer cancel()
			start := time.Now()
			v, err := f.Run(ctx, stages.Mail, tx("192.0.2.7", "h.example.net", "joe@slow.example.com"))
			took := time.Since(start)
			if err != nil || v.Result != "temperror" {
				t.Errorf("verdict %+v, error %v; want temperror", v, err)
			}
			if took < tt.min || (tt.max > 0 && took >= tt.max) {
				t.Errorf("lookup gave up after %v; want a timeout of %v", took, tt.min)
			}
		})
	}
}

// TestReasonIsResinfo: the reason is Authentication-Results resinfo that
// stages/authres reads back, the MAIL FROM result first; a problem quoting
// the sender's DNS cannot break its quoting.
func TestReasonIsResinfo(t *testing.T) {
	ev := evaluation{identity: "mailfrom", domain: "example.com", heloName: "mx.example.net",
		out:  Outcome{Result: PermError, Problem: "bad term \"a\\\" x;\x01 y"},
		helo: &Outcome{Result: Pass}}
	got := ev.reason()
	want := `spf=permerror reason="bad term \"a\\\" x; y" smtp.mailfrom=example.com; spf=pass smtp.helo=mx.example.net`
	if got != want {
		t.Fatalf("reason\n got %s\nwant %s", got, want)
	}
	rs, err := authres.ParseResults(got)
	if err != nil || len(rs) != 2 || rs[0].Value != "permerror" || rs[0].Reason != "bad term \"a\\\" x; y" || rs[1].Get("smtp.helo") != "mx.example.net" {
		t.Fatalf("authres reads %+v, %v", rs, err)
	}
}
