package smtptest

import (
	"bytes"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"strings"
	"testing"
)

// DSN is a delivery status notification a test received, in its parts.
type DSN struct {
	Msg                    *mail.Message
	Human, Status, Headers string
}

// ParseDSN checks the MIME structure of a DSN (RFC 6522: a
// multipart/report of delivery-status with a text, a
// message/delivery-status and a text/rfc822-headers part) and returns
// its three parts.
func ParseDSN(t testing.TB, raw []byte) DSN {
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
	var got, types []string
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
	return DSN{Msg: m, Human: got[0], Status: got[1], Headers: got[2]}
}
