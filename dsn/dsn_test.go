package dsn_test

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/dsn"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestWrite: the three parts of RFC 6522 with CRLF line ends, the text
// of a failure by a reply and by expiry, the status codes of RFC 3463,
// the original header.
func TestWrite(t *testing.T) {
	received := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	d := &dsn.Report{
		ID:       "0123456789ABCDEF",
		Hostname: "gw.test",
		From:     "MAILER-DAEMON@gw.test",
		To:       "alice@sender.test",
		Date:     received.Add(time.Hour),
		QueueID:  "QUEUEID",
		Arrival:  received,
		Failed: []dsn.Failure{
			{Addr: "bad@ex.test", Reply: "550 5.1.1 no such user", Host: "mx.ex.test:25", At: received.Add(time.Minute)},
			{Addr: "slow@ex.test", Reply: "451 4.3.0 try later", Host: "mx.ex.test:25"},
			{Addr: "plain@ex.test", Reply: "554 rejected"},
		},
		Header: []byte("Subject: hello\r\nFrom: alice@sender.test\r\n"),
		MaxAge: 120 * time.Hour,
	}
	var buf bytes.Buffer
	if err := d.Write(&buf); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(buf.Bytes(), []byte("\r\n"), nil), []byte("\n")) {
		t.Error("DSN has bare LF line ends")
	}
	parts := smtptest.ParseDSN(t, buf.Bytes())
	m := parts.Msg
	if got := m.Header.Get("To"); got != "<alice@sender.test>" {
		t.Errorf("To = %q", got)
	}
	if got := m.Header.Get("From"); !strings.Contains(got, "MAILER-DAEMON@gw.test") {
		t.Errorf("From = %q", got)
	}
	if got := m.Header.Get("Auto-Submitted"); got != "auto-replied" {
		t.Errorf("Auto-Submitted = %q", got)
	}
	if got := m.Header.Get("Message-Id"); got != "<0123456789ABCDEF@gw.test>" {
		t.Errorf("Message-ID = %q", got)
	}
	for _, want := range []string{
		"<bad@ex.test>: host mx.ex.test:25 said: 550 5.1.1 no such user",
		"<slow@ex.test>: delivery time expired after 120h0m0s; last reply: 451 4.3.0 try later",
		"<plain@ex.test>: 554 rejected",
	} {
		if !strings.Contains(parts.Human, want) {
			t.Errorf("human part lacks %q:\n%s", want, parts.Human)
		}
	}
	for _, want := range []string{
		"Reporting-MTA: dns; gw.test\r\n",
		"Arrival-Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; bad@ex.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.ex.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\nLast-Attempt-Date: Sat, 01 Mar 2025 10:01:00 +0000\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; slow@ex.test\r\nAction: failed\r\nStatus: 5.4.7\r\nRemote-MTA: dns; mx.ex.test\r\nDiagnostic-Code: smtp; 451 4.3.0 try later\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; plain@ex.test\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 554 rejected\r\n",
	} {
		if !strings.Contains(parts.Status, want) {
			t.Errorf("delivery-status part lacks %q:\n%s", want, parts.Status)
		}
	}
	if parts.Headers != "Subject: hello\r\nFrom: alice@sender.test\r\n" {
		t.Errorf("rfc822-headers part = %q", parts.Headers)
	}
}

// TestReadHeader: the header without its empty line, whole lines only,
// bounded.
func TestReadHeader(t *testing.T) {
	for in, want := range map[string]string{
		"A: 1\r\nB: 2\r\n\r\nbody\r\n": "A: 1\r\nB: 2\r\n",
		"A: 1\r\n":                     "A: 1\r\n",
		"\r\nbody":                     "",
		"A: 1\r\nB: no end":            "A: 1\r\n",
	} {
		got, err := dsn.ReadHeader(strings.NewReader(in))
		if err != nil || string(got) != want {
			t.Errorf("dsn.ReadHeader(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	big := strings.Repeat("X-Long: "+strings.Repeat("x", 100)+"\r\n", 1000)
	got, _ := dsn.ReadHeader(strings.NewReader(big + "\r\nbody"))
	if len(got) > dsn.MaxHeader || !bytes.HasSuffix(got, []byte("\r\n")) {
		t.Errorf("long header cut to %d bytes, ending %q", len(got), got[len(got)-5:])
	}
}
