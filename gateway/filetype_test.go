package gateway_test

import (
	"archive/zip"
	"bytes"
	"log/slog"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

func zipped(t *testing.T, name string, content []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(content)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// TestFiletypeRefusesProgramNamedPDFInZip is issue 14's done-when for the
// filetype kind: a Windows program renamed invoice.pdf inside a zip is
// refused at the end of DATA with a generic reply, the log saying which
// member and which real type; a real PDF in a zip is delivered. The kind
// runs as the mailgate binary's plugin process, as every built-in kind.
func TestFiletypeRefusesProgramNamedPDFInZip(t *testing.T) {
	down := smtptest.NewServer(t)
	var log testkit.SyncBuffer
	g := startGatewayOpts(t, routeTo(down, "dest.test")+`
[[stage]]
name = "attachments"
kind = "filetype"
`, gateway.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	bad := withAttachment("exe-in-zip@test", "invoice.zip", "application/zip", zipped(t, "invoice.pdf", fakePE()))
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, bad); r != "550 5.7.1 Message refused: attachment type not accepted" {
		t.Fatalf("program named invoice.pdf in a zip: %q", r)
	}
	pdf := []byte("%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n")
	good := withAttachment("pdf-in-zip@test", "invoice.zip", "application/zip", zipped(t, "invoice.pdf", pdf))
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, good); !strings.HasPrefix(r, "250") {
		t.Fatalf("PDF in a zip: %q", r)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "pdf-in-zip@test" {
		t.Fatal("wrong message delivered")
	}
	waitUntil(t, waitLong, "the rejection to be logged", func() bool { return strings.Contains(log.String(), "msg=rejected") })
	for _, want := range []string{"stage=attachments", `member \"invoice.pdf\"`, "application/vnd.microsoft.portable-executable"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("log lacks %q:\n%s", want, log.String())
		}
	}
}
