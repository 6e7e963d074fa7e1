package gateway_test

import (
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-milter"
	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// Milters as stages of the real gateway: what they change is what the
// downstream server receives.

// TestOpenDKIMThroughGateway: opendkim in signing mode as a milter stage;
// the message the downstream server receives carries a DKIM-Signature
// that verifies with the public key the test generated.
func TestOpenDKIMThroughGateway(t *testing.T) {
	// The test client relays out through the gateway.
	dkimd := testkit.StartOpendkim(t, testkit.OpendkimOptions{Domain: "sender.test", Selector: "sel"})
	addr := dkimd.Addr

	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "dkim-sign"
kind = "milter"
[stage.config]
address = "inet:%s"
`, addr))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("dkim@test", "Signed body.\r\nSecond line.\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	data := down.WaitFor(1, waitLong)[0].Data
	if !bytes.Contains(data, []byte("DKIM-Signature:")) {
		t.Fatalf("no signature:\n%s", data)
	}
	verifs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: dkimd.LookupTXT})
	if err != nil || len(verifs) != 1 || verifs[0].Err != nil {
		t.Fatalf("verification %v %+v of\n%s", err, verifs, data)
	}
}

// rewriter is a go-milter backend that uses every modification action.
type rewriter struct{ milter.NoOpMilter }

func (rewriter) Body(m *milter.Modifier) (milter.Response, error) {
	m.AddHeader("X-Added", "by the milter")
	m.ChangeHeader(1, "Subject", "changed by the milter")
	m.ChangeHeader(1, "X-Remove-Me", "") // empty value: delete
	m.AddRecipient("added@dest.test")    // go-milter adds the angle brackets
	m.DeleteRecipient("removed@dest.test")
	m.ReplaceBody([]byte("Replaced body.\r\n"))
	return milter.RespAccept, nil
}

func serveMilter(t *testing.T, ln net.Listener, backend func() milter.Milter) {
	t.Helper()
	srv := &milter.Server{NewMilter: backend,
		Actions:  milter.OptAddHeader | milter.OptChangeHeader | milter.OptAddRcpt | milter.OptRemoveRcpt | milter.OptChangeBody,
		Protocol: 0}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// TestMilterModificationsReachDownstream: header add, change and delete,
// recipient add and delete and body replacement by a milter all show up
// in what the downstream server receives.
func TestMilterModificationsReachDownstream(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	serveMilter(t, ln, func() milter.Milter { return rewriter{} })
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "rewriter"
kind = "milter"
[stage.config]
address = "inet:%s"
`, ln.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	msg := "From: a@sender.test\r\nSubject: original\r\nX-Remove-Me: yes\r\nMessage-ID: <mod@test>\r\n\r\nOriginal body.\r\n"
	if r := c.SendMail("a@sender.test", []string{"kept@dest.test", "removed@dest.test"}, msg); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	m := down.WaitFor(1, waitLong)[0]
	rcpts := strings.Join(m.Rcpts, ",")
	if !strings.Contains(rcpts, "kept@dest.test") || !strings.Contains(rcpts, "added@dest.test") || strings.Contains(rcpts, "removed@") {
		t.Errorf("recipients downstream: %v", m.Rcpts)
	}
	data := string(m.Data)
	for _, want := range []string{"X-Added: by the milter\r\n", "Subject: changed by the milter\r\n", "\r\n\r\nReplaced body.\r\n"} {
		if !strings.Contains(data, want) {
			t.Errorf("downstream message lacks %q:\n%s", want, data)
		}
	}
	for _, gone := range []string{"X-Remove-Me", "Subject: original", "Original body"} {
		if strings.Contains(data, gone) {
			t.Errorf("downstream message still has %q:\n%s", gone, data)
		}
	}
}

// TestMilterDownThenBack (fault suite): with the milter down, mail gets the
// milter's default_action (tempfail here, 451) and nothing acknowledged is
// lost; once it is back, filtering resumes.
func TestMilterDownThenBack(t *testing.T) {
	addr := testkit.FreeAddr(t)
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "marker"
kind = "milter"
[stage.config]
address = "inet:%s"
default_action = "tempfail"
connect_timeout = "500ms"
`, addr))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	l := newLedger()
	send := func(i int) string {
		id := fmt.Sprintf("md%d@test", i)
		r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n"))
		l.record(id, r)
		return r
	}
	for i := range 3 {
		if r := send(i); !strings.HasPrefix(r, "451") {
			t.Fatalf("milter down: %q, want 451", r)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	serveMilter(t, ln, func() milter.Milter { return marker{} })
	// The milter is asked again once its circuit's retry time (10s) has
	// passed.
	deadline := time.Now().Add(waitLong)
	for i := 3; ; i++ {
		if r := send(i); strings.HasPrefix(r, "250") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("filtering did not resume with the milter back")
		}
		time.Sleep(250 * time.Millisecond)
	}
	l.check(t, g, down)
	for _, m := range down.Messages() {
		if !bytes.Contains(m.Data, []byte("X-Milter: seen\r\n")) {
			t.Fatalf("a message passed without the milter: %s", m.Data)
		}
	}
}

type marker struct{ milter.NoOpMilter }

func (marker) Body(m *milter.Modifier) (milter.Response, error) {
	m.AddHeader("X-Milter", "seen")
	return milter.RespContinue, nil
}
