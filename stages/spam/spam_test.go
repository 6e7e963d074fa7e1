package spam

import (
	"bufio"
	"context"
	"encoding/base64"
	"io"
	"mime/quotedprintable"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

func newSpam(t *testing.T, env stages.Env, config string) *Spam {
	t.Helper()
	f, err := New(env, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	t.Cleanup(func() { f.(*Spam).Close() })
	return f.(*Spam)
}

// parse splits a message written with \n line ends into the header and
// body a stage gets.
func parse(t testing.TB, msg string) *stages.Transaction {
	t.Helper()
	msg = strings.ReplaceAll(msg, "\n", "\r\n")
	r := bufio.NewReader(strings.NewReader(msg))
	h, err := stages.ParseHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	rest, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return &stages.Transaction{QueueID: "Q1", From: "a@example.test", Rcpts: []string{"b@example.test"}, Header: h, Body: stages.BytesBody(rest)}
}

func run(t *testing.T, s *Spam, tx *stages.Transaction) stages.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := s.Run(ctx, stages.Data, tx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if v.Action != stages.Continue || v.Reply != nil || len(v.Edits) != 0 {
		t.Errorf("verdict %+v: the scorer only reports a score", v)
	}
	return v
}

// clean is a well-formed message from a careful sender.
const clean = `From: Alice Example <alice@example.test>
To: Bob <bob@example.test>
Subject: Minutes of Tuesday's meeting
Date: Tue, 21 Jan 2025 21:04:42 +0000
Message-ID: <20250121210442.1@example.test>
MIME-Version: 1.0
Content-Type: text/plain; charset=utf-8

Hi Bob,

the minutes are at https://wiki.example.test/meetings/2025-01-21 as promised.

Alice
`

func b64(s string) string {
	e := base64.StdEncoding.EncodeToString([]byte(s))
	var b strings.Builder
	for len(e) > 76 {
		b.WriteString(e[:76] + "\n")
		e = e[76:]
	}
	return b.String() + e + "\n"
}

func qp(s string) string {
	var b strings.Builder
	w := quotedprintable.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return strings.ReplaceAll(b.String(), "\r\n", "\n")
}

func TestGTUBE(t *testing.T) {
	s := newSpam(t, stages.Env{}, `{"default_rules": false}`)
	tests := []struct{ name, msg string }{
		{"plain body", "Subject: test\n\nThis is the GTUBE, the\n\t" + gtube + "\n\nIf your spam filter supports it...\n"},
		{"base64 text attachment", `Subject: test
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary="b1"

--b1
Content-Type: text/plain

Nothing to see here.
--b1
Content-Type: text/plain; name="note.txt"
Content-Disposition: attachment; filename="note.txt"
Content-Transfer-Encoding: base64

` + b64("A note:\r\n"+gtube+"\r\n") + `--b1--
`},
		{"quoted-printable HTML", `Subject: test
MIME-Version: 1.0
Content-Type: multipart/alternative; boundary=alt

--alt
Content-Type: text/html; charset=utf-8
Content-Transfer-Encoding: quoted-printable

` + qp(`<html><head><style>p{color:red}</style></head><body><p class="x">`+gtube+`</p></body></html>`+strings.Repeat(" padding", 20)) + `
--alt--
`},
		{"nested message/rfc822", `Subject: fwd
MIME-Version: 1.0
Content-Type: multipart/mixed; boundary=outer

--outer
Content-Type: message/rfc822

Subject: inner
Content-Type: text/plain

` + gtube + `
--outer--
`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := run(t, s, parse(t, tt.msg))
			if v.Score != 1000 || v.Result != "gtube" || v.Reason != "GTUBE=1000" {
				t.Errorf("verdict %+v; want score 1000, result gtube, reason GTUBE=1000", v)
			}
		})
	}
	// The QP test must really split the string, or it tests nothing.
	if !strings.Contains(qp(`<p class="x">`+gtube+`</p>`), "=\n") {
		t.Fatal("the quoted-printable GTUBE is not split by a soft line break")
	}
}

func TestRules(t *testing.T) {
	s := newSpam(t, stages.Env{}, `{"default_rules": false, "rule": [
		{"name": "SUBJ_UEBERWEISUNG", "score": 2.5, "header": "Subject", "pattern": "(?i)überweisung"},
		{"name": "GREETING_DE", "score": 0.7, "body": "Grüße aus Köln"},
		{"name": "SPF_FAIL", "score": 3, "result": "spf:fail"},
		{"name": "DNSBL_BY_NAME", "score": 1, "result": "zen:listed"},
		{"name": "URI_EVIL", "score": 4, "uri": "^https?://[^/]*\\.evil\\.test/"},
		{"name": "NO_LIST_ID", "score": 0.2, "header": "List-Id", "negate": true},
		{"name": "X_MAILER_SPAMMY", "score": 1.1, "header": "ALL", "pattern": "(?m)^X-Mailer: MassMail"},
		{"name": "LINK_TEXT", "score": 0.4, "body": "(?i)click here"}
	]}`)
	tests := []struct {
		name    string
		msg     string
		results []stages.Result
		reason  string
		score   float64
	}{
		{
			name:   "RFC 2047 encoded subject",
			msg:    "Subject: =?UTF-8?B?" + base64.StdEncoding.EncodeToString([]byte("Dringende Überweisung")) + "?=\nList-Id: x\n\nhello\n",
			reason: "SUBJ_UEBERWEISUNG=2.5", score: 2.5,
		},
		{
			name:   "ISO-8859-1 quoted-printable subject and body",
			msg:    "Subject: =?iso-8859-1?q?=DCberweisung?=\nList-Id: x\nContent-Type: text/plain; charset=iso-8859-1\n\nGr\xfc\xdfe aus K\xf6ln\n",
			reason: "SUBJ_UEBERWEISUNG=2.5,GREETING_DE=0.7", score: 3.2,
		},
		{
			name:    "earlier stage results by kind and by name",
			msg:     "Subject: hi\nList-Id: x\n\nhello\n",
			results: []stages.Result{{Stage: "spf", Kind: "spf", Result: "fail"}, {Stage: "zen", Kind: "dnsbl", Result: "listed"}},
			reason:  "SPF_FAIL=3,DNSBL_BY_NAME=1", score: 4,
		},
		{
			name:    "a stage that broke does not count",
			msg:     "Subject: hi\nList-Id: x\n\nhello\n",
			results: []stages.Result{{Stage: "spf", Kind: "spf", Result: "fail", Errored: true}, {Stage: "spf2", Kind: "spf", Result: "pass"}},
		},
		{
			name:   "URL in an HTML link only",
			msg:    "Subject: hi\nList-Id: x\nContent-Type: text/html\n\n<a href=\"http://www.evil.test/x?a=1&amp;b=2\">Click <b>here</b></a>\n",
			reason: "URI_EVIL=4,LINK_TEXT=0.4", score: 4.4,
		},
		{
			name:   "negated header rule and ALL",
			msg:    "Subject: hi\nX-Mailer: MassMail 3.0\n\nhello\n",
			reason: "NO_LIST_ID=0.2,X_MAILER_SPAMMY=1.1", score: 1.3,
		},
		{
			name: "script and style text is not body text",
			msg:  "Subject: hi\nList-Id: x\nContent-Type: text/html\n\n<style>.a{content:'click here'}</style><script>var s='click here';</script><p>hello</p>\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tx := parse(t, tt.msg)
			tx.Results = tt.results
			v := run(t, s, tx)
			if v.Reason != tt.reason || v.Score != tt.score || v.Result != "ham" {
				t.Errorf("verdict %+v; want reason %q, score %v, result ham", v, tt.reason, tt.score)
			}
		})
	}
}

func TestDefaultRules(t *testing.T) {
	s := newSpam(t, stages.Env{}, `{}`)
	v := run(t, s, parse(t, clean))
	if v.Score != 0 || v.Result != "ham" || v.Reason != "" {
		t.Errorf("clean message: %+v; want score 0, ham", v)
	}

	spammy := `From: "service@paypal.example" <win@lottery.example>
Subject: YOU HAVE WON A PRIZE!!!
Content-Type: text/html

<p>Congratulations, you have won!!!! Claim your prize at <a href="http://192.0.2.7/claim">our site</a>, 100% free.</p>
`
	v = run(t, s, parse(t, spammy))
	want := "MISSING_DATE=1,MISSING_MID=0.5,SUBJ_ALL_CAPS=1.5,SUBJ_EXCLAIM=1,BODY_EXCLAIM=0.5,BODY_FREE_MONEY=2,BODY_PRIZE=2,URI_IP_HOST=1.5,HTML_ONLY=1,FROM_NAME_ADDR_MISMATCH=2"
	if v.Reason != want || v.Score != 13 || v.Result != "spam" {
		t.Errorf("spammy message: %+v;\nwant reason %s, score 13, spam", v, want)
	}

	// A display name with an address of the sender's own domain is fine.
	tx := parse(t, strings.Replace(clean, "Alice Example <alice@example.test>", "alice@example.test <alice@mail.example.test>", 1))
	if v := run(t, s, tx); v.Reason != "" {
		t.Errorf("own address in the display name: %+v", v)
	}
}

func TestDefaultRulesConfig(t *testing.T) {
	msg := "Subject: hello\n\nplain\n" // no Date, Message-ID, From
	tests := []struct{ config, reason string }{
		{`{}`, "MISSING_DATE=1,MISSING_MID=0.5,MISSING_FROM=1"},
		{`{"default_rules": false}`, ""},
		{`{"rule": [{"name": "MISSING_DATE", "score": 0.25}, {"name": "MISSING_MID", "score": 0}]}`, "MISSING_DATE=0.25,MISSING_FROM=1"},
		// Replacing a built-in rule keeps its place in the report.
		{`{"rule": [{"name": "MISSING_FROM", "score": 3, "header": "Sender", "negate": true}]}`, "MISSING_DATE=1,MISSING_MID=0.5,MISSING_FROM=3"},
	}
	for _, tt := range tests {
		v := run(t, newSpam(t, stages.Env{}, tt.config), parse(t, msg))
		if v.Reason != tt.reason {
			t.Errorf("%s: reason %q; want %q", tt.config, v.Reason, tt.reason)
		}
	}
}

func TestSpamScore(t *testing.T) {
	msg := "Subject: hello\n\nplain\n"
	for _, tt := range []struct {
		config, result string
	}{
		{`{"spam_score": 2.5}`, "spam"},
		{`{"spam_score": 2.6}`, "ham"},
	} {
		if v := run(t, newSpam(t, stages.Env{}, tt.config), parse(t, msg)); v.Result != tt.result || v.Score != 2.5 {
			t.Errorf("%s: %+v; want %s at 2.5", tt.config, v, tt.result)
		}
	}
}

func TestConfigErrors(t *testing.T) {
	tests := []struct{ config, want string }{
		{`{"backend": "spamassassin"}`, `backend: unexpected "spamassassin"; expect native, spamd or rspamd`},
		{`{"address": "127.0.0.1:783"}`, `address: only for backend`},
		{`{"backend": "spamd", "address": "localhost"}`, `address: unexpected "localhost"`},
		{`{"backend": "rspamd", "address": "ftp://x:1"}`, `address: unexpected "ftp://x:1"`},
		{`{"rule": [{"name": "bad name", "score": 1, "body": "x"}]}`, `rule[0]: name: unexpected "bad name"`},
		{`{"rule": [{"name": "GTUBE", "score": 1, "body": "x"}]}`, `GTUBE is built in`},
		{`{"rule": [{"name": "A", "score": 1}]}`, `rule[0] A: set exactly one of header, body, uri or result`},
		{`{"rule": [{"name": "A", "score": 1, "body": "x", "uri": "y"}]}`, `set exactly one of`},
		{`{"rule": [{"name": "A", "score": 1, "body": "(x"}]}`, `rule[0] A: body: error parsing regexp`},
		{`{"rule": [{"name": "A", "score": 1, "header": "Subject", "pattern": "[x"}]}`, `rule[0] A: pattern: error parsing regexp`},
		{`{"rule": [{"name": "A", "score": 1, "body": "x", "pattern": "y"}]}`, `pattern goes with header`},
		{`{"rule": [{"name": "A", "score": 1, "header": "ALL"}]}`, `needs a pattern`},
		{`{"rule": [{"name": "A", "score": 1, "result": "spf"}]}`, `result: unexpected "spf"; expect "stage:result"`},
		{`{"rule": [{"name": "A", "score": 1, "body": "x"}, {"name": "A", "score": 1, "body": "y"}]}`, `rule[1] A: name: defined twice`},
		{`{"default_rules": false, "rule": [{"name": "MISSING_DATE", "score": 1}]}`, `set exactly one of`},
		{`{"uribl": [{"zone": "", "score": 1}]}`, `uribl[0]: zone: unexpected ""`},
		{`{"uribl": [{"zone": "multi.uribl.test", "returns": ["10.0.0.1"]}]}`, `uribl[0]: returns[0]: unexpected "10.0.0.1"`},
		{`{"uribl": [{"zone": "multi.uribl.test", "returns": ["127.0.0.9-127.0.0.2"]}]}`, `returns[0]: unexpected`},
		{`{"spam_score": 5, "colour": "red"}`, `colour: unknown key`},
	}
	for _, tt := range tests {
		_, err := New(stages.Env{}, stages.JSONConfig([]byte(tt.config)))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %v; want one containing %q", tt.config, err, tt.want)
		}
	}
}

func TestURIBL(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"evil.test.multi.uribl.test":         {"A 127.0.0.2"},
		"grey.test.multi.uribl.test":         {"A 127.0.0.4"},
		"example.co.uk.multi.uribl.test":     {"A 127.0.0.2"},
		"slow.test.multi.uribl.test":         {"TIMEOUT"},
		"refused.test.multi.uribl.test":      {"A 127.0.0.1"},
		"evil.test.dbl.test":                 {"A 127.0.1.2"},
		"example.co.uk.dbl.test":             {"A 127.255.255.254"},
		"wiki.example.test.multi.uribl.test": {"A 127.0.0.2"}, // not the registrable domain: never asked
	})
	s := newSpam(t, stages.Env{DNSServers: []string{dns.Addr()}}, `{
		"default_rules": false, "dns_timeout": "2s",
		"uribl": [
			{"zone": "multi.uribl.test", "score": 4, "mask": 2},
			{"zone": "dbl.test", "score": 2.5, "returns": ["127.0.1.2-127.0.1.99"]}
		]}`)
	tests := []struct {
		name, body, reason string
		score              float64
	}{
		{"listed in both", "see http://www.evil.test/offer\n", "multi.uribl.test(evil.test)=4,dbl.test(evil.test)=2.5", 6.5},
		{"mask leaves out other bits", "see http://grey.test/\n", "", 0},
		{"registrable domain under a public suffix", "see https://shop.example.co.uk/a\n", "multi.uribl.test(example.co.uk)=4; skipped dbl.test(example.co.uk): answer 127.255.255.254 is not a listing code", 4},
		{"timeout and refused are skipped", "http://slow.test/ and http://refused.test/\n",
			"skipped multi.uribl.test(slow.test): ", 0},
		{"clean", "https://wiki.example.test/meetings\n", "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := run(t, s, parse(t, "Subject: x\n\n"+tt.body))
			if !strings.HasPrefix(v.Reason, tt.reason) || (tt.reason == "" && v.Reason != "") || v.Score != tt.score {
				t.Errorf("verdict %+v; want reason %q, score %v", v, tt.reason, tt.score)
			}
		})
	}

	// Answers are cached for their TTL: the same message again asks nothing.
	before := dns.Queries()
	v := run(t, s, parse(t, "Subject: x\n\nsee http://www.evil.test/offer\n"))
	if v.Score != 6.5 || dns.Queries() != before {
		t.Errorf("second lookup: %+v, %d new queries; want 6.5 from the cache", v, dns.Queries()-before)
	}
}
