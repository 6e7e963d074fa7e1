package dmarc

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// zone is the DNS of the end-to-end cases: one domain per policy.
var zone = dnstest.Zone{
	"_dmarc.example.com.":      {`TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com"`},
	"_dmarc.strict.test.":      {`TXT "v=DMARC1; p=reject; aspf=s; adkim=s"`},
	"_dmarc.quar.test.":        {`TXT "v=DMARC1; p=quarantine"`},
	"_dmarc.monitor.test.":     {`TXT "v=DMARC1; p=none"`},
	"_dmarc.half.test.":        {`TXT "v=DMARC1; p=reject; pct=50"`},
	"_dmarc.zero.test.":        {`TXT "v=DMARC1; p=quarantine; pct=0"`},
	"_dmarc.testing.test.":     {`TXT "v=DMARC1; p=reject; t=y"`},
	"_dmarc.example.org.":      {`TXT "v=DMARC1; p=reject; sp=none"`},
	"_dmarc.example.net.":      {`TXT "v=DMARC1; p=none; sp=quarantine; np=reject"`},
	"www.example.net.":         {"A 192.0.2.80"},
	"_dmarc.twice.test.":       {`TXT "v=DMARC1; p=reject"`, `TXT "v=DMARC1; p=none"`},
	"_dmarc.other.twice.test.": {`TXT "v=spf1 -all"`, `TXT "v=DMARC1; p=reject"`},
	"_dmarc.broken.test.":      {"SERVFAIL"},
	"_dmarc.badp.test.":        {`TXT "v=DMARC1; p=bogus; rua=mailto:r@badp.test"`},
	"_dmarc.badp-norua.test.":  {`TXT "v=DMARC1; p=bogus"`},
}

func testFilter(t *testing.T, sample int) *Filter {
	t.Helper()
	srv := dnstest.NewServer(t, zone)
	f, err := New(stages.Env{DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(`{"trusted_arc_sealers": ["lists.example.org"], "cache_size": 0}`)))
	if err != nil {
		t.Fatal(err)
	}
	d := f.(*Filter)
	d.sample = func() int { return sample }
	return d
}

// msg is a transaction with the given From field and earlier results.
func msg(from string, results ...stages.Result) *stages.Transaction {
	return &stages.Transaction{
		Client:  stages.Client{Addr: netip.MustParseAddr("192.0.2.1"), Helo: "mail.sender.test"},
		From:    "bounce@sender.test",
		Header:  stages.Header{{Name: "From", Value: from}, {Name: "Subject", Value: "hi"}},
		Results: results,
	}
}

func spf(result, domain string) stages.Result {
	return stages.Result{Stage: "spf", Kind: "spf", Result: result, Reason: "spf=" + result + " smtp.mailfrom=" + domain + "; spf=none smtp.helo=mail.sender.test"}
}

func dkim(entries ...string) stages.Result {
	return stages.Result{Stage: "dkim", Kind: "dkim", Result: "pass", Reason: strings.Join(entries, "; ")}
}

func arc(result string) stages.Result {
	return stages.Result{Stage: "arc", Kind: "arc", Result: result}
}

func TestEvaluate(t *testing.T) {
	for _, tc := range []struct {
		name     string
		sample   int
		tx       *stages.Transaction
		result   string
		action   stages.Action
		inReason []string
	}{
		{name: "p=reject forgery", tx: msg("<ceo@example.com>", spf("fail", "sender.test")),
			result: Reject, action: stages.Reject, inReason: []string{"dmarc=fail", "header.from=example.com", "policy.dmarc=reject"}},
		{name: "relaxed SPF alignment", tx: msg("a@example.com", spf("pass", "bounce.example.com")),
			result: Pass, inReason: []string{"dmarc=pass", "header.from=example.com"}},
		{name: "SPF pass of another domain", tx: msg("a@example.com", spf("pass", "sender.test")),
			result: Reject, action: stages.Reject},
		{name: "strict SPF", tx: msg("a@strict.test", spf("pass", "bounce.strict.test")), result: Reject, action: stages.Reject},
		{name: "strict DKIM identical", tx: msg("a@strict.test", dkim("dkim=pass header.d=strict.test header.s=s1 header.b=abc")), result: Pass},
		{name: "strict DKIM subdomain", tx: msg("a@strict.test", dkim("dkim=pass header.d=mail.strict.test header.s=s1")), result: Reject, action: stages.Reject},
		{name: "DKIM aligned pass among failures", tx: msg("a@example.com", spf("fail", "sender.test"),
			dkim(`dkim=fail reason="bad; signature" header.d=example.com header.s=a`, "dkim=pass header.d=mail.example.com header.s=b")), result: Pass},
		{name: "DKIM fail aligned", tx: msg("a@example.com", dkim("dkim=fail header.d=example.com header.s=a")), result: Reject, action: stages.Reject},
		{name: "p=quarantine", tx: msg("a@quar.test"), result: Quarantine, action: stages.Quarantine, inReason: []string{"policy.dmarc=quarantine"}},
		{name: "p=none", tx: msg("a@monitor.test"), result: Fail, inReason: []string{"policy.dmarc=none"}},
		{name: "pct=50 sampled in", sample: 49, tx: msg("a@half.test"), result: Reject, action: stages.Reject},
		{name: "pct=50 sampled out", sample: 50, tx: msg("a@half.test"), result: Quarantine, action: stages.Quarantine, inReason: []string{"sampled_out"}},
		{name: "pct=0", sample: 0, tx: msg("a@zero.test"), result: Fail},
		{name: "t=y", tx: msg("a@testing.test"), result: Quarantine, action: stages.Quarantine, inReason: []string{"t=y"}},
		{name: "sp=none", tx: msg("a@sub.example.org"), result: Fail, inReason: []string{"sp=none at example.org"}},
		{name: "p of the org domain itself", tx: msg("a@example.org"), result: Reject, action: stages.Reject},
		{name: "np for a name that does not exist", tx: msg("a@nx.example.net"), result: Reject, action: stages.Reject},
		{name: "sp for a name that exists", tx: msg("a@www.example.net"), result: Quarantine, action: stages.Quarantine},
		{name: "trusted ARC sealer", tx: withSeals(msg("a@example.com", spf("fail", "sender.test"), arc("pass")), "lists.example.org"),
			result: Fail, inReason: []string{"trusted_forwarder", "as.d=lists.example.org", "policy.dmarc=none"}},
		{name: "trusted sealer not the newest", tx: withSeals(msg("a@example.com", arc("pass")), "lists.example.org", "evil.test"),
			result: Reject, action: stages.Reject},
		{name: "ARC chain failed", tx: withSeals(msg("a@example.com", arc("fail")), "lists.example.org"), result: Reject, action: stages.Reject},
		{name: "untrusted sealer", tx: withSeals(msg("a@example.com", arc("pass")), "other.example"), result: Reject, action: stages.Reject},
		{name: "several records", tx: msg("a@twice.test"), result: None, inReason: []string{"several DMARC records"}},
		{name: "non-DMARC TXT discarded", tx: msg("a@other.twice.test"), result: Reject, action: stages.Reject},
		{name: "no record", tx: msg("a@nothing.test"), result: None},
		{name: "DNS failure", tx: msg("a@broken.test"), result: TempError},
		{name: "bad p with rua is p=none", tx: msg("a@badp.test"), result: Fail},
		{name: "bad p without rua", tx: msg("a@badp-norua.test"), result: None},
		{name: "several From domains: strictest", tx: msg("a@monitor.test, b@example.com"), result: Reject, action: stages.Reject},
		{name: "group without address", tx: msg("undisclosed-recipients:;"), result: None},
		{name: "unparseable From", tx: msg(`"x" a@example.com`), result: Reject, action: stages.Reject},
		{name: "dkim stage broke", tx: msg("a@example.com", stages.Result{Kind: "dkim", Errored: true}), result: TempError},
		{name: "trusted client", tx: func() *stages.Transaction { tx := msg("a@example.com"); tx.Client.Trusted = true; return tx }(), result: None},
		{name: "null sender, HELO identity", tx: func() *stages.Transaction {
			tx := msg("a@example.com", stages.Result{Kind: "spf", Result: "pass", Reason: "spf=pass smtp.helo=mx.example.com"})
			tx.From = ""
			return tx
		}(), result: Pass},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := testFilter(t, tc.sample)
			v, err := f.Run(context.Background(), stages.Data, tc.tx)
			if err != nil {
				t.Fatal(err)
			}
			if v.Result != tc.result || v.Action != tc.action {
				t.Errorf("result %s action %s, want %s %s; reason %s", v.Result, v.Action, tc.result, tc.action, v.Reason)
			}
			for _, s := range tc.inReason {
				if !strings.Contains(v.Reason, s) {
					t.Errorf("reason %q lacks %q", v.Reason, s)
				}
			}
			if tc.action == stages.Reject && (v.Reply == nil || !strings.HasPrefix(v.Reply.String(), "550 5.7.1 ")) {
				t.Errorf("reply %v, want 550 5.7.1", v.Reply)
			}
		})
	}
}

// withSeals adds ARC-Seal fields, instance 1 first, sealed by domains.
func withSeals(tx *stages.Transaction, domains ...string) *stages.Transaction {
	for i, d := range domains {
		tx.Header = append(stages.Header{{Name: "ARC-Seal", Value: "i=" + string(rune('1'+i)) + "; a=rsa-sha256; cv=none; d=" + d + "; s=arc; b=xyz"}}, tx.Header...)
	}
	return tx
}

func TestFromFieldProblems(t *testing.T) {
	f := testFilter(t, 0)
	for name, h := range map[string]stages.Header{
		"no From":    {{Name: "Subject", Value: "x"}},
		"two From":   {{Name: "From", Value: "a@monitor.test"}, {Name: "From", Value: "b@example.com"}},
		"IP literal": {{Name: "From", Value: "a@[192.0.2.1]"}},
		"no domain":  {{Name: "From", Value: "a"}},
	} {
		v, _ := f.Run(context.Background(), stages.Data, &stages.Transaction{Header: h})
		if name == "no domain" {
			// No address at all: nothing to check (§6.6.1, ignored).
			if v.Result != None {
				t.Errorf("%s: %s", name, v.Result)
			}
			continue
		}
		if v.Result != PermError || v.Action != stages.Reject || v.Reply.String() != "550 5.7.1 Message needs exactly one From header field with an address" {
			t.Errorf("%s: %+v", name, v)
		}
	}
}

// TestGatherInputs: the spf and dkim reasons are read as RFC 8601
// resinfo (stages/authres): comments and quoted ";" do not split an
// entry, entries of other methods are ignored, and what comes after an
// entry that does not parse is lost, not misread.
func TestGatherInputs(t *testing.T) {
	in := gatherInputs(msg("a@x.test",
		stages.Result{Stage: "spf", Kind: "spf", Result: "pass", Reason: `x-vendor=ok (first; not spf) policy.x="a;b"; spf=pass (checked) smtp.mailfrom=bounce@Sender.TEST`},
		dkim(`dkim=pass (good sig; yes) header.d=A.test header.s=s1 header.b="ab;c"`,
			`iprev=pass policy.iprev=192.0.2.1`,
			`dkim=fail reason="x; y" header.d="b.test"`,
			`dkim=pass header.d=c.test header.s=(unterminated`,
			`dkim=pass header.d=d.test`)))
	want := []authResult{{Result: "pass", Domain: "a.test", Selector: "s1"}, {Result: "fail", Domain: "b.test"}}
	if in.spf != (authResult{Result: "pass", Domain: "sender.test", Scope: "mfrom"}) || !slices.Equal(in.dkim, want) {
		t.Errorf("spf %+v, dkim %+v; want dkim %+v", in.spf, in.dkim, want)
	}
}
