package gateway_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// blocked runs one transaction per sender and recipient and wants each
// refused at RCPT as a block entry refuses (550 5.7.1).
func blocked(t *testing.T, c *client, cases [][2]string) {
	t.Helper()
	for _, tc := range cases {
		c.Cmd("MAIL FROM:<"+tc[0]+"> SMTPUTF8", "250")
		c.Send("RCPT TO:<" + tc[1] + ">\r\n")
		if r := c.Reply(); !strings.HasPrefix(r, "550 5.7.1 ") {
			t.Errorf("MAIL FROM:<%s> RCPT TO:<%s>: %q, want 550 5.7.1 (blocked)", tc[0], tc[1], r)
		}
		c.Cmd("RSET", "250")
	}
}

// A root dot or the case of the domain does not walk past a block entry:
// policy sees an address in the one form relay control and routes see.
func TestTrailingDotMeetsBlockList(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "example.test")+`
[policy.block]
senders = ["spammer@bad.test"]
rcpts = ["ceo@example.test"]
`)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	blocked(t, c, [][2]string{
		{"a@sender.test", "ceo@example.test."},
		{"a@sender.test", "CEO@Example.TEST."},
		{"spammer@bad.test.", "x@example.test"},
		{"spammer@BAD.test.", "x@example.test"},
	})
	// What the lists do not name still passes.
	c.Cmd("MAIL FROM:<a@sender.test.>", "250")
	c.Cmd("RCPT TO:<cfo@example.test.>", "250")
}

// Under SMTPUTF8 a domain in U-labels is the same domain as its A-labels,
// and an admin may list it in either spelling.
func TestIDNSpellingsMeetBlockList(t *testing.T) {
	down := smtptest.NewServer(t)
	for _, tc := range []struct {
		entry   string
		senders []string
	}{
		{"xn--bcher-kva.test", []string{"a@bücher.test", "a@BÜCHER.test.", "a@XN--BCHER-KVA.test"}},
		{"bücher.test", []string{"a@xn--bcher-kva.test", "a@bücher.test", "a@Bücher.Test."}},
	} {
		t.Run(tc.entry, func(t *testing.T) {
			g := startGateway(t, routeTo(down, "example.test")+"\n[policy.block]\nsenders = [\""+tc.entry+"\"]\n")
			c := dial(t, g.SMTPAddrs()[0])
			c.Cmd("EHLO client.test", "250")
			var cases [][2]string
			for _, from := range tc.senders {
				cases = append(cases, [2]string{from, "x@example.test"})
			}
			blocked(t, c, cases)
			c.Cmd("MAIL FROM:<a@bücher.test.example> SMTPUTF8", "250")
			c.Cmd("RCPT TO:<x@example.test>", "250")
		})
	}
}

// A recipient reaches the override that names it however it is spelled:
// one with a root dot is under the "legal" policy, so it cannot share a
// message with a recipient under [policy] (452 4.5.3), and shares one
// with its own spellings.
func TestAddressSpellingsMeetOverride(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "example.test", "strict.test")+`
[[policy.override]]
name = "legal"
rcpts = ["legal@example.test"]
tag_score = 3.0
quarantine_score = 4.0
reject_score = 5.0

[[policy.override]]
name = "strict"
domains = ["strict.test"]
tag_score = 3.0
quarantine_score = 4.0
reject_score = 5.0
`)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<x@example.test>", "250")
	c.Cmd("RCPT TO:<legal@example.test.>", "452 4.5.3 ")
	c.Cmd("RCPT TO:<y@strict.test.>", "452 4.5.3 ")
	c.Cmd("RSET", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<legal@example.test.>", "250")
	c.Cmd("RCPT TO:<Legal@EXAMPLE.test>", "250")
	c.Cmd("RCPT TO:<x@example.test>", "452 4.5.3 ")
}

// The relayed envelope carries the canonical form: the domain without its
// root dot and in lower case, the local part as the client wrote it; the
// Received field says the same.
func TestRelayedAddressesCanonical(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.sender.test", "250")
	if r := c.SendMail("First.Last@Sender.TEST.", []string{"B.User@Dest.Test."}, message("dot@test", "x\r\n")); !strings.HasPrefix(r, "250 ") {
		t.Fatalf("DATA reply %q", r)
	}
	m := down.WaitFor(1, waitLong)[0]
	if m.From != "First.Last@sender.test" || len(m.Rcpts) != 1 || m.Rcpts[0] != "B.User@dest.test" {
		t.Fatalf("envelope downstream %q -> %q, want First.Last@sender.test -> B.User@dest.test", m.From, m.Rcpts)
	}
	if !strings.Contains(string(m.Data), "\tfor <B.User@dest.test>; ") {
		t.Fatalf("Received field does not name the canonical recipient:\n%s", m.Data)
	}
	if wire := down.Transcripts()[0]; !strings.Contains(wire, "RCPT TO:<B.User@dest.test>\r\n") {
		t.Fatalf("no RCPT TO:<B.User@dest.test> on the wire:\n%s", wire)
	}
}

// A route written in U-labels is taken (converted, not refused) and
// relays mail for the domain in either spelling.
func TestRouteInULabels(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "bücher.test"))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test> SMTPUTF8", "250")
	c.Cmd("RCPT TO:<x@xn--bcher-kva.test>", "250")
	c.Cmd("RCPT TO:<y@bücher.test.>", "250")
	c.Cmd("DATA", "354")
	c.Send(message("idn@test", "x\r\n") + ".\r\n")
	c.Expect("250 ")
	m := down.WaitFor(1, waitLong)[0]
	if strings.Join(m.Rcpts, ",") != "x@xn--bcher-kva.test,y@xn--bcher-kva.test" {
		t.Fatalf("recipients downstream %q, want both at xn--bcher-kva.test", m.Rcpts)
	}
}

// `mailgate test` takes addresses as the SMTP side does: the same
// canonical form, so the same block entry refuses them.
func TestDryRunAddressSpellings(t *testing.T) {
	cfg, err := policy.Parse("test.toml", []byte(fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[[route]]
domains = ["example.test"]
servers = ["127.0.0.1:1"]
[policy.block]
senders = ["spammer@bad.test"]
rcpts = ["ceo@example.test"]
`, t.TempDir())))
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range []gateway.DryRunInput{
		{From: "spammer@bad.test.", To: []string{"x@example.test"}},
		{From: "a@sender.test", To: []string{"ceo@Example.TEST."}},
	} {
		in.ClientIP, in.Helo, in.Message = netip.MustParseAddr("192.0.2.10"), "client.test", []byte("Subject: x\n\nhi\n")
		res, err := gateway.DryRun(context.Background(), cfg, gateway.Options{Logger: testLogger(t)}, in)
		if err != nil {
			t.Fatal(err)
		}
		if res.Action != "reject" || !strings.HasPrefix(res.Reply, "550 5.7.1 ") {
			t.Errorf("%s -> %s: action %q reply %q, want reject 550 5.7.1", in.From, in.To, res.Action, res.Reply)
		}
	}
	// The domain is the one after the last "@" (as in the session), and
	// what is relayed is canonical.
	res, err := gateway.DryRun(context.Background(), cfg, gateway.Options{Logger: testLogger(t)}, gateway.DryRunInput{
		ClientIP: netip.MustParseAddr("192.0.2.10"), From: "a@sender.test", To: []string{"Boss@EXAMPLE.test."},
		Message: []byte("Subject: x\n\nhi\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Action != "accept" || strings.Join(res.Rcpts, ",") != "Boss@example.test" {
		t.Fatalf("action %q rcpts %q, want accept to Boss@example.test", res.Action, res.Rcpts)
	}
}
