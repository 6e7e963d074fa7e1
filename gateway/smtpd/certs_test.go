package smtpd

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

// startTLS says EHLO, starts TLS on c and returns the name in the
// certificate the server showed.
func startTLS(t *testing.T, c *client) string {
	t.Helper()
	c.Cmd("EHLO client.test", "250")
	c.Cmd("STARTTLS", "220")
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Upgrade(tc)
	c.Cmd("EHLO client.test", "250")
	return tc.ConnectionState().PeerCertificates[0].Subject.CommonName
}

// TestCertRenewedFiles: the certificate files replaced under a running
// server (as certbot renews them) are served to the next TLS session,
// without a restart, while a session begun under the old certificate
// goes on; a new pair that does not load keeps the old one served and is
// logged.
func TestCertRenewedFiles(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteCert(t, certFile, keyFile, "a.gateway.test")
	var log testkit.SyncBuffer
	ts := serveOpts(t, t.TempDir(), fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile), nil, func(o *Options) {
		o.Logger = slog.New(slog.NewTextHandler(&log, nil))
	})
	old := connect(t, ts)
	if name := startTLS(t, old); name != "a.gateway.test" {
		t.Fatalf("first certificate %q", name)
	}
	old.Cmd("MAIL FROM:<a@sender.test>", "250")

	// A renewal written half: the key does not match the new certificate.
	testkit.ReplaceFile(t, certFile, []byte("-----BEGIN CERTIFICATE-----\nnot a certificate\n-----END CERTIFICATE-----\n"))
	if name := startTLS(t, connect(t, ts)); name != "a.gateway.test" {
		t.Fatalf("after a bad file: %q", name)
	}
	waitLog(t, &log, "TLS certificate not loaded")

	testkit.WriteCert(t, certFile, keyFile, "b.gateway.test")
	if name := startTLS(t, connect(t, ts)); name != "b.gateway.test" {
		t.Fatalf("after renewal: %q", name)
	}
	waitLog(t, &log, "TLS certificate loaded")
	old.Cmd("RCPT TO:<b@dest.test>", "250")
	old.Cmd("DATA", "354")
	old.Send(msg + ".\r\n")
	old.Expect("250")
}

// TestCertReload: a reload loads the files again at once; with a pair
// that does not load, the old certificate stays and the reload goes on.
// New files in the config must load, or the reload is refused (turning
// TLS off needs a restart: gateway's TestRestartNeeded).
func TestCertReload(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteCert(t, certFile, keyFile, "a.gateway.test")
	conf := fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile)
	ts := serveOpts(t, t.TempDir(), conf, nil, nil)
	reload := func(conf string) error {
		t.Helper()
		return ts.srv.Reload(Update{Config: parseConfig(t, conf), Routes: routes{"dest.test"}}, nil)
	}
	old := connect(t, ts)
	startTLS(t, old)

	testkit.WriteCert(t, certFile, keyFile, "b.gateway.test")
	if err := reload(conf); err != nil {
		t.Fatal(err)
	}
	if name := startTLS(t, connect(t, ts)); name != "b.gateway.test" {
		t.Fatalf("after reload: %q", name)
	}
	old.Cmd("MAIL FROM:<a@sender.test>", "250")

	testkit.ReplaceFile(t, keyFile, []byte("garbage"))
	if err := reload(conf); err != nil {
		t.Fatalf("a bad certificate refused the reload: %v", err)
	}
	if name := startTLS(t, connect(t, ts)); name != "b.gateway.test" {
		t.Fatalf("after a bad reload: %q", name)
	}

	other := filepath.Join(dir, "other.pem")
	if err := reload(fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", other, keyFile)); err == nil || !strings.Contains(err.Error(), "server.tls_cert") {
		t.Fatalf("missing new file: %v", err)
	}
	testkit.WriteCert(t, other, filepath.Join(dir, "other.key"), "c.gateway.test")
	if err := reload(fmt.Sprintf("[server]\ntls_cert = %q\ntls_key = %q\n", other, filepath.Join(dir, "other.key"))); err != nil {
		t.Fatal(err)
	}
	if name := startTLS(t, connect(t, ts)); name != "c.gateway.test" {
		t.Fatalf("after new files: %q", name)
	}
}

// waitLog waits until log has a line with msg.
func waitLog(t *testing.T, log *testkit.SyncBuffer, msg string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(log.String(), msg); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q logged:\n%s", msg, log)
		}
	}
}
