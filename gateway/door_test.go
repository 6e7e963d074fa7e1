package gateway_test

import (
	"crypto/tls"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// The door controls end to end: what a client meets before SMTP.

// proxyV2TCP4 is a PROXY protocol v2 header written by hand (HAProxy's
// spec §2.2): PROXY, TCP over IPv4, from src to 192.0.2.1:25.
func proxyV2TCP4(src [4]byte, port uint16) string {
	h := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c")
	h = append(h, src[:]...)
	h = append(h, 192, 0, 2, 1)
	h = binary.BigEndian.AppendUint16(h, port)
	h = binary.BigEndian.AppendUint16(h, 25)
	return string(h)
}

// TestProxyProtocolClientAddress: behind a proxy speaking PROXY v1 or v2,
// the stages see the client the header names: the DNSBL refuses the
// listed 203.0.113.7 (its reply names the address it looked up), and SPF
// passes 203.0.113.8, which the sender's record names, though every
// connection comes from 127.0.0.1.
func TestProxyProtocolClientAddress(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"7.113.0.203.zen.blocklist.test.": {"A 127.0.0.2"},
		"sender.test.":                    {`TXT "v=spf1 ip4:203.0.113.8 -all"`},
	})
	down := smtptest.NewServer(t)
	g := startGateway(t, fmt.Sprintf(`
[server]
listen = ["127.0.0.1:0"]
proxy_protocol = true
proxy_trusted = ["127.0.0.1"]

[dns]
servers = [%q]

[[stage]]
name = "dnsbl"
kind = "dnsbl"
[stage.config]
[[stage.config.list]]
zone = "zen.blocklist.test"
action = "reject"
reply = "Client host {ip} blocked using {zone}"

[[stage]]
name = "spf"
kind = "spf"
`, dns.Addr())+routeTo(down, "dest.test"))
	proxied := func(header string) *client {
		conn, err := net.DialTimeout("tcp", g.SMTPAddrs()[0].String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		c := testkit.NewSMTPClient(t, conn)
		c.Send(header)
		c.Expect("220 ")
		c.Cmd("EHLO client.test", "250")
		return c
	}
	for i, header := range []string{
		"PROXY TCP4 203.0.113.8 192.0.2.1 40000 25\r\n",
		proxyV2TCP4([4]byte{203, 0, 113, 8}, 40000),
	} {
		id := fmt.Sprintf("proxied-%d@test", i)
		if r := proxied(header).SendMail("a@sender.test", []string{"b@dest.test"}, message(id, "hi\r\n")); !strings.HasPrefix(r, "250") {
			t.Fatalf("header %d: %q", i, r)
		}
		data := string(down.WaitFor(i+1, waitLong)[i].Data)
		for _, want := range []string{"Received-SPF: pass", "client-ip=203.0.113.8", "Received: from client.test ([203.0.113.8])"} {
			if !strings.Contains(data, want) {
				t.Errorf("header %d: the message lacks %q:\n%s", i, want, data)
			}
		}
	}
	for i, header := range []string{
		"PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n",
		proxyV2TCP4([4]byte{203, 0, 113, 7}, 40000),
	} {
		c := proxied(header)
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		if r := c.Cmd("RCPT TO:<b@dest.test>", "5"); !strings.HasPrefix(r, "550 5.7.1 Client host 203.0.113.7 blocked using zen.blocklist.test") {
			t.Fatalf("listed client, header %d: %q", i, r)
		}
	}
}

// TestPregreet: with pregreet_delay, a client that talks before the
// banner is refused with 554 5.7.1 and nothing delivered; a client that
// waits gets the banner after the delay and its mail is delivered. The
// refusal is counted.
func TestPregreet(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\npregreet_delay = \"200ms\"\n"+routeTo(down, "dest.test"))
	conn, err := dialFrom(t, "127.0.0.2", g.SMTPAddrs()[0]) // cached bad from now on
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	early := testkit.NewSMTPClient(t, conn)
	early.Send("EHLO bot.test\r\nMAIL FROM:<bot@spam.test>\r\n")
	if r := early.Rest(); r != "554 5.7.1 Access denied\r\n" {
		t.Fatalf("early talker: %q", r)
	}

	start := time.Now()
	c := dial(t, g.SMTPAddrs()[0])
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Fatalf("banner after %v, before pregreet_delay", d)
	}
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("patient@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("patient client: %q", r)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "patient@test" {
		t.Fatal("wrong message delivered")
	}
	_, metrics := httpGet(t, "http://"+g.AdminAddr().String()+"/metrics")
	for _, want := range []string{`mailgate_smtp_door_refusals_total{reason="pregreet"} 1`, `mailgate_smtp_replies_total{code="554"} 1`} {
		if !strings.Contains(metrics, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// TestCertRenewedOnSIGHUP: `mailgate serve` with a certificate; the
// files are replaced by a renewed certificate and the gateway gets a
// SIGHUP, as certbot's deploy hook does: the next TLS session is served
// the new certificate, and one begun under the old goes on and its
// message is taken.
func TestCertRenewedOnSIGHUP(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteCert(t, certFile, keyFile, "a.gateway.test")
	conf := writeConfig(t, tempDir(t), down)
	b, err := os.ReadFile(conf)
	if err != nil {
		t.Fatal(err)
	}
	tlsLines := fmt.Sprintf("listen = [\"127.0.0.1:0\"]\ntls_cert = %q\ntls_key = %q\n", certFile, keyFile)
	if err := os.WriteFile(conf, []byte(strings.Replace(string(b), "listen = [\"127.0.0.1:0\"]\n", tlsLines, 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, conf)
	startTLS := func() (*client, string) {
		c := testkit.DialSMTP(t, p.addr)
		c.Cmd("EHLO client.test", "250")
		c.Cmd("STARTTLS", "220")
		tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
		if err := tc.Handshake(); err != nil {
			t.Fatal(err)
		}
		c.Upgrade(tc)
		c.Cmd("EHLO client.test", "250")
		return c, tc.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	old, name := startTLS()
	if name != "a.gateway.test" {
		t.Fatalf("first certificate %q", name)
	}
	old.Cmd("MAIL FROM:<a@sender.test>", "250")

	testkit.WriteCert(t, certFile, keyFile, "b.gateway.test")
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, waitLong, "the reload", func() bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return strings.Contains(p.log.String(), "msg=reloaded")
	})
	if _, name := startTLS(); name != "b.gateway.test" {
		t.Fatalf("after SIGHUP: %q", name)
	}
	old.Cmd("RCPT TO:<b@dest.test>", "250")
	old.Cmd("DATA", "354")
	old.Send(message("old-session@test", "hi\r\n") + ".\r\n")
	old.Expect("250")
	delivered(t, down, "old-session@test")
}
