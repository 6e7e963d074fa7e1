package gateway_test

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestDiskFull: a spool that cannot write answers 452 and keeps what it
// had already accepted.
func TestDiskFull(t *testing.T) {
	down := smtptest.NewServer(t)
	down.Stop()
	var full atomic.Bool
	g := startGatewayOpts(t, routeTo(down, "dest.test"), gateway.Options{Logger: testLogger(t),
		Spool: spool.Options{FailWrites: failWhen(&full, syscall.ENOSPC)}})
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("before@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	full.Store(true)
	if r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message("during@test", "x\r\n")); !strings.HasPrefix(r, "452 4.3.1") {
		t.Fatalf("full spool: %q, want 452 4.3.1", r)
	}
	full.Store(false)
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("after@test", "x\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	down.Restart()
	msgs := down.WaitFor(2, waitLong)
	waitQueueEmpty(t, g)
	msgs = down.Messages()
	got := map[string]bool{}
	for _, m := range msgs {
		got[messageID(m.Data)] = true
	}
	if !got["before@test"] || !got["after@test"] || got["during@test"] || len(msgs) != 2 {
		t.Fatalf("delivered %v", got)
	}
}

func TestConnectionLimitPerIP(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_connections_per_ip = 2\n"+routeTo(down, "dest.test"))
	c1 := dial(t, g.SMTPAddrs()[0])
	dial(t, g.SMTPAddrs()[0])
	conn, err := net.Dial("tcp", g.SMTPAddrs()[0].String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(waitLong))
	line, _ := bufio.NewReader(conn).ReadString('\n')
	if !strings.HasPrefix(line, "421 4.7.0") {
		t.Fatalf("third connection got %q, want 421 4.7.0", line)
	}
	// A slot frees up when a client leaves.
	c1.Cmd("QUIT", "221")
	deadline := time.Now().Add(waitLong)
	for {
		conn, err := net.Dial("tcp", g.SMTPAddrs()[0].String())
		if err != nil {
			t.Fatal(err)
		}
		conn.SetDeadline(time.Now().Add(waitLong))
		line, _ := bufio.NewReader(conn).ReadString('\n')
		conn.Close()
		if strings.HasPrefix(line, "220") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released: %q", line)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestRecipientLimitAndIdleTimeout(t *testing.T) {
	down := smtptest.NewServer(t)
	// command_timeout is what the test waits for at the end; it must
	// also outlast a loaded machine's pause between two commands.
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nmax_recipients = 2\ncommand_timeout = \"2s\"\n"+routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<1@dest.test>", "250")
	c.Cmd("RCPT TO:<2@dest.test>", "250")
	c.Cmd("RCPT TO:<3@dest.test>", "452 4.5.3")
	// Then idle past command_timeout: 421 and the connection closes.
	c.Expect("421 4.4.2")
}

func TestMalformedCommands(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("MAIL FROM:<a@sender.test>", "503 5.5.1") // before EHLO (RFC 5321 §4.3.2)
	c.Cmd("EHLO client.test", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "503 5.5.1") // before MAIL
	c.Cmd("MAIL TO:<a@sender.test>", "501 5.5.2")
	c.Cmd("MAIL FROM:<a@sender.test> BODY=9BIT", "501 5.5.4")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<no-domain>", "501 5.")
	c.Cmd("RCPT TO:<ü@dest.test>", "553 5.6.7") // no SMTPUTF8 in MAIL
	c.Cmd("DATA", "503 5.5.1")                  // no valid recipient
	c.Cmd("XYZW", "500 5.5.2")
}

func selfSignedFiles(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteCert(t, certFile, keyFile, "mx.gateway.test")
	return certFile, keyFile
}

// TestSTARTTLS: with a certificate configured the gateway offers STARTTLS,
// and the Received field of a message sent over TLS says so (RFC 3848).
func TestSTARTTLS(t *testing.T) {
	down := smtptest.NewServer(t)
	cert, key := selfSignedFiles(t)
	g := startGateway(t, fmt.Sprintf("[server]\nlisten = [\"127.0.0.1:0\"]\ntls_cert = %q\ntls_key = %q\n", cert, key)+routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Send("EHLO client.test\r\n")
	ehlo := ""
	for {
		line, err := c.ReadLine()
		if err != nil {
			t.Fatal(err)
		}
		ehlo += line
		if line[3] == ' ' {
			break
		}
	}
	if !strings.Contains(ehlo, "250-STARTTLS") {
		t.Fatalf("no STARTTLS offered:\n%s", ehlo)
	}
	c.Cmd("STARTTLS", "220")
	tc := tls.Client(c.Conn, &tls.Config{InsecureSkipVerify: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	c.Upgrade(tc)
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("tls@test", "secret\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	data := string(down.WaitFor(1, waitLong)[0].Data)
	if !strings.Contains(data, "\t(using TLS 1.3 with cipher TLS_") || !strings.Contains(data, "with ESMTPS id ") {
		t.Fatalf("Received field does not show TLS:\n%s", data)
	}
}

// failWhen is a spool fault hook: it fails every call with errno while
// the flag is set.
func failWhen(flag *atomic.Bool, errno syscall.Errno) func() error {
	return func() error {
		if flag.Load() {
			return errno
		}
		return nil
	}
}
