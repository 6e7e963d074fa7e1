package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// verify_rcpts: a recipient the internal server does not know is refused
// at RCPT, not bounced later; the answer is cached.
func TestVerifyRcpts(t *testing.T) {
	down := smtptest.NewServer(t)
	down.SetRcptReply("nobody@dest.test", 550)
	g := startGateway(t, fmt.Sprintf("\n[[route]]\ndomains = [\"dest.test\"]\nservers = [%q]\nverify_rcpts = true\n", down.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	for range 2 {
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<nobody@dest.test>", "550 5.1.1 ")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		c.Cmd("RSET", "250")
	}
	probes := 0
	for _, w := range down.Transcripts() {
		probes += strings.Count(w, "RCPT TO:<nobody@dest.test>")
	}
	if probes != 1 {
		t.Errorf("nobody@dest.test asked %d times, want once", probes)
	}
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("v@test", "hi\r\n")); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA: %q", r)
	}
	if m := down.WaitFor(1, waitLong)[0]; len(m.Rcpts) != 1 || m.Rcpts[0] != "b@dest.test" {
		t.Fatalf("delivered to %q", m.Rcpts)
	}
}

func TestVerifyRcptsNeedsServers(t *testing.T) {
	_, err := policy.Parse("test.toml", []byte("hostname = \"mx.test\"\ndata_dir = \"/tmp/x\"\n[[route]]\ndomains = [\"*\"]\nmx = true\nverify_rcpts = true\n"))
	if err == nil || !strings.Contains(err.Error(), "verify_rcpts: needs servers") {
		t.Fatalf("verify_rcpts on an mx route: %v", err)
	}
}

// verify_rcpts: a recipient the internal server could not verify (it
// answered 4xx, or is down) is to be tried again later (450 4.1.1), also
// while the route is not asked again after it did not answer, since taken
// it could bounce to a forged sender; unless the route fails open.
func TestVerifyRcptsUnverified(t *testing.T) {
	for _, mode := range []string{"", "tempfail", "accept"} {
		down := smtptest.NewServer(t)
		down.SetRcptReply("busy@dest.test", 450)
		route := fmt.Sprintf("\n[[route]]\ndomains = [\"dest.test\"]\nservers = [%q]\nverify_rcpts = true\n", down.Addr())
		if mode != "" {
			route += fmt.Sprintf("verify_rcpts_unverified = %q\n", mode)
		}
		want := "450 4.1.1 "
		if mode == "accept" {
			want = "250 "
		}
		g := startGateway(t, route)
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<b@dest.test>", "250") // known from now on
		c.Cmd("RCPT TO:<busy@dest.test>", want)
		down.Stop()
		c.Cmd("RCPT TO:<nobody@dest.test>", want)
		c.Cmd("RCPT TO:<nobody2@dest.test>", want) // the route is not asked again
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		c.Cmd("QUIT", "221")
	}
}
