package headers

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"mime"
	"net/netip"
	"reflect"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/authres"
)

func newFilter(t testing.TB, config string) *Headers {
	t.Helper()
	f, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	return f.(*Headers)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{`{}`, "nothing to do"},
		{`{"rule": [{"action": "append", "name": "X-A", "value": "1"}]}`, `rule[0].action: unexpected "append"; expect add, set, remove or rewrite`},
		{`{"rule": [{"action": "add", "value": "1"}]}`, "rule[0].name: required"},
		{`{"rule": [{"action": "add", "name": "X A", "value": "1"}]}`, `rule[0].name: unexpected "X A"`},
		{`{"rule": [{"action": "add", "name": "X-A:", "value": "1"}]}`, `rule[0].name: unexpected "X-A:"`},
		{`{"rule": [{"action": "add", "name": "X-A"}]}`, "rule[0].value: required"},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "{ip}"}]}`, "rule[0].value: unknown placeholder {ip}; expect {score}, {queue_id}"},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "{score"}]}`, "rule[0].value: unclosed {"},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "a\nb"}]}`, "rule[0].value: control character"},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "1", "pattern": "x"}]}`, `rule[0].pattern: not used by action "add"; it takes name, value`},
		{`{"rule": [{"action": "set", "name_regex": "X-.*", "value": "1"}]}`, `rule[0].name_regex: not used by action "set"`},
		{`{"rule": [{"action": "remove"}]}`, "rule[0].name: required; expect a field name, or name_regex"},
		{`{"rule": [{"action": "remove", "name": "X-A", "name_regex": "X-B"}]}`, "rule[0].name_regex: unexpected with name"},
		{`{"rule": [{"action": "remove", "name_regex": "X-(["}]}`, "rule[0].name_regex: error parsing regexp"},
		{`{"rule": [{"action": "remove", "name": "X-A", "value": "v"}]}`, `rule[0].value: not used by action "remove"`},
		{`{"rule": [{"action": "rewrite", "name": "Subject"}]}`, "rule[0].pattern: required"},
		{`{"rule": [{"action": "rewrite", "name": "Subject", "pattern": "(", "replacement": "x"}]}`, "rule[0].pattern: error parsing regexp"},
		{`{"rule": [{"action": "rewrite", "name": "Subject", "pattern": "x", "replacement": "a\r\nBcc: b"}]}`, "rule[0].replacement: control character"},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "1"}, {"action": "rewrite", "name": "X-A"}]}`, "rule[1].pattern: required"},
		{`{"remove_internal": ["X Internal*"]}`, `remove_internal[0]: unexpected "X Internal*"`},
		{`{"remove_internal": [""]}`, `remove_internal[0]: unexpected ""`},
		{`{"spam_headers": true, "spam_header_prefix": "X Spam "}`, `spam_header_prefix: unexpected "X Spam "`},
		{`{"rule": [{"action": "add", "name": "X-A", "value": "1", "extra": 1}]}`, `rule: unknown key "extra"`},
	} {
		_, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig([]byte(tc.config)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s):\n err %v\nwant %q", tc.config, err, tc.want)
		}
	}
	if _, err := New(stages.Env{}, stages.JSONConfig([]byte(`{"authentication_results": true}`))); err == nil || !strings.Contains(err.Error(), "authserv-id") {
		t.Errorf("authentication_results without a hostname: err %v", err)
	}
}

func TestInfo(t *testing.T) {
	info := newFilter(t, `{"spam_headers": true}`).Info()
	want := stages.Info{Kind: "headers", Version: "1", Phases: stages.Data, Needs: stages.NeedHeader | stages.NeedResults, Edits: true,
		Results: []string{"edited", "unchanged"}}
	if !reflect.DeepEqual(info, want) {
		t.Errorf("info %+v, want %+v", info, want)
	}
}

// TestSkipped is a rewrite that would make a line longer than RFC 5322
// allows: the pipeline would refuse the edit and fail the message, so the
// stage leaves it out and says so.
func TestSkipped(t *testing.T) {
	f := newFilter(t, `{"rule": [
		{"action": "rewrite", "name": "X-Long", "pattern": "^(.*)$", "replacement": "$1$1"},
		{"action": "add", "name": "X-Helo", "value": "{helo}{helo}{helo}"},
		{"action": "add", "name": "X-Ok", "value": "ok"}]}`)
	long := strings.Repeat("a", 600)
	tx := &stages.Transaction{
		Client: stages.Client{Helo: strings.Repeat("h", 1000)},
		Header: stages.Header{{Name: "X-Long", Value: long}},
	}
	v, err := f.Run(context.Background(), stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Edits) != 2 || v.Edits[0].Name != "X-Helo" || len(v.Edits[0].Value) != 3*maxPlaceholder || v.Edits[1].Name != "X-Ok" {
		t.Errorf("edits %+v", v.Edits)
	}
	if !strings.Contains(v.Reason, "rule[0]: X-Long: line of 1208 characters; the limit is 998") {
		t.Errorf("reason %q", v.Reason)
	}
	if err := stages.ApplyEdits(tx, v.Edits); err != nil {
		t.Errorf("ApplyEdits: %v", err)
	}
	if tx.Header[0].Value != long {
		t.Errorf("X-Long changed")
	}
}

// TestPlaceholders checks that values from the client cannot break out of
// their field.
func TestPlaceholders(t *testing.T) {
	f := newFilter(t, `{"rule": [{"action": "add", "name": "X-Client", "value": "{client_ip} {helo} {from} {client_name}"}]}`)
	tx := &stages.Transaction{
		Client: stages.Client{Addr: netip.MustParseAddr("::ffff:192.0.2.1"), Helo: "evil\r\nBcc: x@example.org", Name: "n\x00ame"},
		From:   "a@example.org\tb",
	}
	v, _ := f.Run(context.Background(), stages.Data, tx)
	if len(v.Edits) != 1 || v.Edits[0].Value != "192.0.2.1 evil??Bcc: x@example.org a@example.org?b n?ame" {
		t.Errorf("edits %+v", v.Edits)
	}
}

func TestUnchanged(t *testing.T) {
	f := newFilter(t, `{"rule": [{"action": "set", "name": "X-A", "value": "1"}, {"action": "rewrite", "name": "Subject", "pattern": "^x", "replacement": "x"}]}`)
	tx := &stages.Transaction{Header: stages.Header{{Name: "x-a", Value: "1"}, {Name: "Subject", Value: "xyz"}}}
	v, _ := f.Run(context.Background(), stages.Data, tx)
	if len(v.Edits) != 0 || v.Result != "unchanged" {
		t.Errorf("verdict %+v", v)
	}
}

func TestEncode(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"plain ascii", "plain ascii"},
		{"Grüße aus Köln", "=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_K=C3=B6ln?="},
		{"[EXT] Grüße  <a@b>", "[EXT] =?utf-8?q?Gr=C3=BC=C3=9Fe?=  <a@b>"},
		{"a\r\nBcc: b", "=?utf-8?q?a=0D=0ABcc:?= b"},
	} {
		got := encode(tc.in)
		if got != tc.want {
			t.Errorf("encode(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if back, _ := decode(got); back != tc.in {
			t.Errorf("decode(encode(%q)) = %q", tc.in, back)
		}
	}
}

func FuzzEncode(f *testing.F) {
	for _, s := range []string{"Grüße aus Köln", "a\r\nb", "=?utf-8?q?x?=", "x\x00y", strings.Repeat("ü", 100)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// Only text that came from decoding is encoded: no leading or
		// trailing white space (unfolding trims it) and valid UTF-8
		// (the decoder converts to it).
		s = strings.Trim(strings.ToValidUTF8(s, "?"), " \t")
		if strings.Contains(s, "=?") {
			// Text that reads as an encoded-word stays as it is, as the
			// sender could have written it.
			return
		}
		enc := encode(s)
		if stages.CheckFieldText(enc) != nil {
			t.Fatalf("encode(%q) = %q has control characters", s, enc)
		}
		back, err := new(mime.WordDecoder).DecodeHeader(enc)
		if err != nil {
			t.Fatalf("decode %q: %v", enc, err)
		}
		// Runs of white space inside the span stay; readers see the
		// same words.
		if strings.Join(strings.Fields(back), " ") != strings.Join(strings.Fields(s), " ") {
			t.Errorf("encode(%q) = %q decodes to %q", s, enc, back)
		}
	})
}

// FuzzRules applies rules built from the fuzzer's strings to a header it
// makes up, with the built-in options on: the stage must never panic, the
// pipeline must accept every edit, nothing it writes may hold a bare CR or
// LF, and the stage's own view of the result must be what the pipeline
// made.
func FuzzRules(f *testing.F) {
	f.Add("Subject: =?UTF-8?Q?[EXT]_Gr=C3=BC=C3=9Fe?=\r\nX-A: 1\r\nx-a: 2\r\n\r\n", "Subject", "^\\[EXT\\] ", "", "{helo}")
	f.Add("Authentication-Results: mx.example.test; none\r\nReceived: a\r\n\tb\r\n\r\n", "Received", "a", "$0$0", "x")
	f.Add("X-Spam-Status: Yes\r\nBad line\r\nSubject: \xff\xfe\r\n\r\n", "X-Spam-Status", ".*", "z\u00fc", "{score}")
	f.Add("Subject: a\rb\r\nX: \r\n \r\n\r\n", "Subject", "a", "c", "")
	f.Fuzz(func(t *testing.T, header, name, pattern, replacement, value string) {
		h, err := stages.ParseHeader(bufio.NewReader(strings.NewReader(header)))
		if err != nil || len(h) > 50 {
			return
		}
		rules := []Rule{
			{Action: "rewrite", Name: name, Pattern: pattern, Replacement: replacement},
			{Action: "remove", NameRegex: "(?i)^" + pattern, Pattern: replacement},
			{Action: "set", Name: name, Value: value},
			{Action: "add", Name: name, Value: value},
			{Action: "remove", Name: name, Pattern: pattern},
		}
		cfg, _ := json.Marshal(Config{Rules: rules, RemoveInternal: []string{name + "*"}, SpamHeaders: true, AuthenticationResults: true})
		ff, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig([]byte(cfg)))
		if err != nil {
			return
		}
		tx := &stages.Transaction{
			Header: h,
			Client: stages.Client{Helo: value},
			From:   replacement,
			Results: []stages.Result{
				{Stage: "spf", Kind: "spf", Result: name, Reason: pattern},
				{Stage: name, Kind: "spam", Score: 2, Reason: value},
			},
		}
		e := ff.(*Headers).edit(tx)
		applied := *tx
		if err := stages.ApplyEdits(&applied, e.edits); err != nil {
			t.Fatalf("ApplyEdits refused the stage's edits: %v\nedits: %+v", err, e.edits)
		}
		if len(applied.Header) != len(e.h) {
			t.Fatalf("the stage sees %d fields, the pipeline made %d", len(e.h), len(applied.Header))
		}
		for i, got := range applied.Header {
			want := e.h[i]
			if got.Name != want.Name || stages.Unfold(got.Value) != stages.Unfold(want.Value) {
				t.Errorf("field %d: the stage sees %q: %q, the pipeline made %q: %q", i, want.Name, want.Value, got.Name, got.Value)
			}
			var b bytes.Buffer
			stages.Header{got}.WriteTo(&b)
			if i := bareLineEnd(b.Bytes()); i >= 0 && !contains(h, got) {
				t.Errorf("written field %q has a bare CR or LF", b.Bytes())
			}
		}
	})
}

// contains reports whether h has f exactly, as received.
func contains(h stages.Header, f stages.Field) bool {
	for _, g := range h {
		if g == f {
			return true
		}
	}
	return false
}

// TestPlugin runs the stage through the gateway's plugin host over gRPC:
// the verdicts of earlier stages and 8-bit header values must arrive
// intact.
func TestPlugin(t *testing.T) {
	st, err := sdktest.Stage(t, New, `{"authentication_results": true, "spam_headers": true,
		"rule": [{"action": "rewrite", "name": "Subject", "pattern": "^\\[EXT\\] ", "replacement": ""}]}`)
	if err != nil {
		t.Fatal(err)
	}
	// What the plugin describes crosses the wire whole, its result words
	// too (DescribeResponse.results).
	if info := st.Info(); !info.Edits || info.Needs&stages.NeedResults == 0 || !reflect.DeepEqual(info.Results, Results()) {
		t.Errorf("info %+v", info)
	}
	tx := &stages.Transaction{
		From:   "a@example.org",
		Header: stages.Header{{Name: "Subject", Value: "[EXT] Grüße"}, {Name: "Authentication-Results", Value: "mx.example.test; spf=pass"}},
		Body:   stages.BytesBody("body\r\n"),
		Results: []stages.Result{
			{Stage: "spf", Kind: "spf", Score: 1, Result: "softfail", Reason: "smtp.mailfrom=example.org"},
		},
	}
	v, err := st.Run(context.Background(), stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stages.ApplyEdits(tx, v.Edits); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	tx.Header.WriteTo(&b)
	want := "Authentication-Results: mx.example.test; spf=softfail\r\n smtp.mailfrom=example.org\r\n" +
		"Subject: Grüße\r\n" +
		"X-Spam-Score: 1.0\r\n" +
		"X-Spam-Status: No, score=1.0 required=5.0 tests=SPF_SOFTFAIL=1.0\r\n\r\n"
	if b.String() != want {
		t.Errorf("header\n%s\nwant\n%s", b.String(), want)
	}
}

// TestAuthResult: one stage's result as an entry of the field. The
// properties come from the stage's reason read as resinfo, from its entry
// for the same method and result only.
func TestAuthResult(t *testing.T) {
	tx := &stages.Transaction{From: "a@example.org", Client: stages.Client{Helo: "client.example.org"}}
	null := &stages.Transaction{Client: stages.Client{Helo: "client.example.org"}}
	for _, tc := range []struct {
		r    stages.Result
		tx   *stages.Transaction
		want string
	}{
		{stages.Result{Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=a@example.org"}, tx, "spf=pass smtp.mailfrom=a@example.org"},
		// Not resinfo: the identity comes from the envelope.
		{stages.Result{Kind: "spf", Result: "pass", Reason: "smtp.mailfrom=b.example: allowed"}, tx, "spf=pass smtp.mailfrom=example.org"},
		{stages.Result{Kind: "spf", Result: "Softfail"}, tx, "spf=softfail smtp.mailfrom=example.org"},
		{stages.Result{Kind: "spf", Result: "none"}, null, "spf=none smtp.helo=client.example.org"},
		{stages.Result{Kind: "spf", Errored: true, Reason: "spf=pass smtp.mailfrom=x.example"}, tx, "spf=temperror smtp.mailfrom=example.org"},
		{stages.Result{Kind: "spf", Result: "hardfail"}, tx, ""},
		// Values are read as RFC 8601 says (a comment is no part of
		// one) and quoted where they need it; ptypes outside RFC 8601
		// §2.3 and reason= are left out.
		{stages.Result{Kind: "spf", Result: "pass", Reason: `spf=pass reason="ok" smtp.mailfrom=x(y) smtp.helo="a b" x-vendor.score=5`}, tx, `spf=pass smtp.helo="a b" smtp.mailfrom=x`},
		// spf with check_helo: the HELO entry's properties are not the
		// MAIL FROM result's.
		{stages.Result{Kind: "spf", Result: "fail", Reason: "spf=fail smtp.mailfrom=bad.example; spf=pass smtp.helo=mx.example"}, tx, "spf=fail smtp.mailfrom=bad.example"},
		// A problem quoting the sender's SPF record cannot lend its words.
		{stages.Result{Kind: "spf", Result: "permerror", Reason: `spf=permerror reason="bad term \"x;\" in example.org"; spf=pass smtp.mailfrom=bank.example`}, tx, "spf=permerror smtp.mailfrom=example.org"},
		{stages.Result{Kind: "dkim", Result: "pass", Reason: "dkim=pass header.d=example.org header.i=@example.org"}, tx, "dkim=pass header.d=example.org header.i=@example.org"},
		{stages.Result{Kind: "iprev", Result: "pass", Reason: "iprev=pass policy.iprev=192.0.2.1"}, tx, "iprev=pass policy.iprev=192.0.2.1"},
		{stages.Result{Kind: "arc", Result: "pass"}, tx, "arc=pass"},
		{stages.Result{Kind: "arc", Errored: true}, tx, ""},
		{stages.Result{Kind: "dnsbl", Result: "listed"}, tx, ""},
	} {
		got := ""
		if _, res, ok := authResult(tc.r, tc.tx); ok {
			got = authres.Format(res)
		}
		if got != tc.want {
			t.Errorf("authResult(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestAuthResultsOnePerMethod: spf reports at MAIL and at DATA; the field
// has one spf entry, the last.
func TestAuthResultsOnePerMethod(t *testing.T) {
	tx := &stages.Transaction{
		From:   "a@example.org",
		Header: stages.Header{{Name: "Subject", Value: "x"}},
		Results: []stages.Result{
			{Stage: "spf", Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=example.org; spf=none smtp.helo=mx.example.org"},
			{Stage: "dnsbl", Kind: "dnsbl", Result: "clean"},
			{Stage: "spf", Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=example.org; spf=none smtp.helo=mx.example.org"},
		},
	}
	v, err := newFilter(t, `{"authentication_results": true}`).Run(context.Background(), stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if len(v.Edits) != 1 || v.Edits[0].Value != "mx.example.test; spf=pass smtp.mailfrom=example.org" {
		t.Fatalf("edits %+v", v.Edits)
	}
}

func TestFormatScore(t *testing.T) {
	for in, want := range map[float64]string{0: "0.0", 5: "5.0", 0.25: "0.25", 5.1000000000000005: "5.1", -1.5: "-1.5", -0.001: "0.0", 1000.001: "1000.0"} {
		if got := formatScore(in); got != want {
			t.Errorf("formatScore(%v) = %q, want %q", in, got, want)
		}
	}
}

// TestAuthResultDMARC: the dmarc kind's words for a failure name the
// disposition; each is dmarc=fail with policy.dmarc (RFC 7489 §11.2,
// DMARCbis).
func TestAuthResultDMARC(t *testing.T) {
	tx := &stages.Transaction{From: "a@example.org"}
	for _, tc := range []struct {
		r    stages.Result
		want string
	}{
		{stages.Result{Kind: "dmarc", Result: "reject", Reason: `dmarc=fail reason="p=reject" header.from=example.com policy.dmarc=reject`}, "dmarc=fail header.from=example.com policy.dmarc=reject"},
		{stages.Result{Kind: "dmarc", Result: "quarantine", Reason: `dmarc=fail reason="p=reject, sampled_out: pct=50" header.from=example.com policy.dmarc=quarantine`}, "dmarc=fail header.from=example.com policy.dmarc=quarantine"},
		{stages.Result{Kind: "dmarc", Result: "fail", Reason: `dmarc=fail reason="p=reject, trusted_forwarder: arc=pass as.d=lists.example.org" header.from=example.com policy.dmarc=none`}, "dmarc=fail header.from=example.com policy.dmarc=none"},
		{stages.Result{Kind: "dmarc", Result: "pass", Reason: "dmarc=pass header.from=example.com"}, "dmarc=pass header.from=example.com"},
		{stages.Result{Kind: "dmarc", Result: "none", Reason: `dmarc=none reason="no DMARC record" header.from=example.com`}, "dmarc=none header.from=example.com"},
		{stages.Result{Kind: "dmarc", Result: "reject", Errored: true}, "dmarc=temperror"},
		// Another kind's "reject" is not a DMARC disposition.
		{stages.Result{Kind: "spf", Result: "reject"}, ""},
	} {
		got := ""
		if _, res, ok := authResult(tc.r, tx); ok {
			got = authres.Format(res)
		}
		if got != tc.want {
			t.Errorf("authResult(%+v) = %q, want %q", tc.r, got, tc.want)
		}
	}
}

// TestAuthResultsDKIMPerSignature: a dkim stage's reason has an entry per
// signature, and the field gets each as an entry of its own with the
// signature's header.d, header.s, header.b and header.i (RFC 8601 §2.7.1,
// RFC 6008), after the other methods' single entries.
func TestAuthResultsDKIMPerSignature(t *testing.T) {
	for _, tc := range []struct {
		dkim stages.Result
		want string
	}{
		{stages.Result{Stage: "dkim", Kind: "dkim", Result: "pass",
			Reason: `dkim=pass header.b=AbCdEfGh header.d=a.example header.i=@a.example header.s=sel; ` +
				`dkim=fail reason="body hash did not verify" header.b=Zz+/0123 header.d=b.example header.s=s2; ` +
				`dkim=permerror reason="no key record" header.d="c d" header.s=x; ` +
				`dkim=neutral reason="990 more signatures not evaluated, over the limit of 10"`},
			"mx.example.test; spf=pass smtp.mailfrom=example.org; " +
				"dkim=pass header.b=AbCdEfGh header.d=a.example header.i=@a.example header.s=sel; " +
				"dkim=fail header.b=Zz+/0123 header.d=b.example header.s=s2; dkim=permerror header.d=\"c d\" header.s=x; dkim=neutral"},
		{stages.Result{Stage: "dkim", Kind: "dkim", Result: "none", Reason: "dkim=none"},
			"mx.example.test; spf=pass smtp.mailfrom=example.org; dkim=none"},
		// The stage broke: one entry for the method.
		{stages.Result{Stage: "dkim", Kind: "dkim", Errored: true, Reason: "dkim: read body: EOF"},
			"mx.example.test; spf=pass smtp.mailfrom=example.org; dkim=temperror"},
	} {
		tx := &stages.Transaction{
			From:   "a@example.org",
			Header: stages.Header{{Name: "Subject", Value: "x"}},
			Results: []stages.Result{
				{Stage: "spf", Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=example.org"},
				tc.dkim,
			},
		}
		v, err := newFilter(t, `{"authentication_results": true}`).Run(context.Background(), stages.Data, tx)
		if err != nil {
			t.Fatal(err)
		}
		if len(v.Edits) != 1 || v.Edits[0].Value != tc.want {
			t.Errorf("edits %+v\nwant %q", v.Edits, tc.want)
		}
	}
}
