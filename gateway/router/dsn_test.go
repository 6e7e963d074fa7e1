package router

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/spool"
)

func TestDSNRender(t *testing.T) {
	received := time.Date(2025, 3, 1, 10, 0, 0, 0, time.UTC)
	d := &dsn{
		id:         "0123456789ABCDEF",
		hostname:   "gw.test",
		bounceFrom: "MAILER-DAEMON@gw.test",
		date:       received.Add(time.Hour),
		env:        &spool.Envelope{ID: "QUEUEID", From: "alice@sender.test", Received: received},
		failed: []spool.Recipient{
			{Addr: "bad@ex.test", Status: spool.Failed, LastReply: "550 5.1.1 no such user", LastHost: "mx.ex.test:25", Updated: received.Add(time.Minute)},
			{Addr: "slow@ex.test", Status: spool.Failed, LastReply: "451 4.3.0 try later", LastHost: "mx.ex.test:25"},
			{Addr: "plain@ex.test", Status: spool.Failed, LastReply: "554 rejected"},
		},
		header: []byte("Subject: hello\r\nFrom: alice@sender.test\r\n"),
		maxAge: 120 * time.Hour,
	}
	var buf bytes.Buffer
	if err := d.render(&buf); err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(bytes.ReplaceAll(buf.Bytes(), []byte("\r\n"), nil), []byte("\n")) {
		t.Error("DSN has bare LF line ends")
	}
	parts := parseDSN(t, buf.Bytes())
	m := parts.msg
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
		if !strings.Contains(parts.human, want) {
			t.Errorf("human part lacks %q:\n%s", want, parts.human)
		}
	}
	for _, want := range []string{
		"Reporting-MTA: dns; gw.test\r\n",
		"Arrival-Date: Sat, 01 Mar 2025 10:00:00 +0000\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; bad@ex.test\r\nAction: failed\r\nStatus: 5.1.1\r\nRemote-MTA: dns; mx.ex.test\r\nDiagnostic-Code: smtp; 550 5.1.1 no such user\r\nLast-Attempt-Date: Sat, 01 Mar 2025 10:01:00 +0000\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; slow@ex.test\r\nAction: failed\r\nStatus: 5.4.7\r\nRemote-MTA: dns; mx.ex.test\r\nDiagnostic-Code: smtp; 451 4.3.0 try later\r\n",
		"\r\n\r\nFinal-Recipient: rfc822; plain@ex.test\r\nAction: failed\r\nStatus: 5.0.0\r\nDiagnostic-Code: smtp; 554 rejected\r\n",
	} {
		if !strings.Contains(parts.status, want) {
			t.Errorf("delivery-status part lacks %q:\n%s", want, parts.status)
		}
	}
	if parts.headers != "Subject: hello\r\nFrom: alice@sender.test\r\n" {
		t.Errorf("rfc822-headers part = %q", parts.headers)
	}
}

type dsnParts struct {
	msg                    *mail.Message
	human, status, headers string
}

// parseDSN checks the MIME structure of a DSN (RFC 6522) and returns its
// three parts.
func parseDSN(t *testing.T, raw []byte) dsnParts {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("DSN is not a message: %v\n%s", err, raw)
	}
	mt, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/report" || params["report-type"] != "delivery-status" {
		t.Fatalf("Content-Type = %q (%v)", m.Header.Get("Content-Type"), err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	var got []string
	var types []string
	for {
		p, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("DSN part: %v", err)
		}
		b, err := io.ReadAll(p)
		if err != nil {
			t.Fatal(err)
		}
		ct, _, _ := mime.ParseMediaType(p.Header.Get("Content-Type"))
		types = append(types, ct)
		got = append(got, string(b))
	}
	want := []string{"text/plain", "message/delivery-status", "text/rfc822-headers"}
	if strings.Join(types, " ") != strings.Join(want, " ") {
		t.Fatalf("DSN parts %v, want %v", types, want)
	}
	return dsnParts{msg: m, human: got[0], status: got[1], headers: got[2]}
}

func TestReadHeader(t *testing.T) {
	for in, want := range map[string]string{
		"A: 1\r\nB: 2\r\n\r\nbody\r\n": "A: 1\r\nB: 2\r\n",
		"A: 1\r\n":                     "A: 1\r\n",
		"\r\nbody":                     "",
		"A: 1\r\nB: no end":            "A: 1\r\n",
	} {
		got, err := readHeader(strings.NewReader(in))
		if err != nil || string(got) != want {
			t.Errorf("readHeader(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	big := strings.Repeat("X-Long: "+strings.Repeat("x", 100)+"\r\n", 1000)
	got, _ := readHeader(strings.NewReader(big + "\r\nbody"))
	if len(got) > maxHeader || !bytes.HasSuffix(got, []byte("\r\n")) {
		t.Errorf("long header cut to %d bytes, ending %q", len(got), got[len(got)-5:])
	}
}
