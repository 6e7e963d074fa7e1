package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/gateway/router/routertest"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// TestDMARCRejectForgery: a message whose From domain publishes p=reject,
// sent from a host its SPF record does not allow and without a DKIM
// signature, is refused at DATA with 550 5.7.1 and never delivered; the
// same domain's aligned SPF pass is delivered.
func TestDMARCRejectForgery(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"bank.test.":        {`TXT "v=spf1 ip4:192.0.2.0/24 -all"`},
		"_dmarc.bank.test.": {`TXT "v=DMARC1; p=reject"`},
		"mail.bank.test.":   {`TXT "v=spf1 ip4:127.0.0.0/8 -all"`},
	})
	down := routertest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "dmarc"
kind = "dmarc"
`, dns.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	forged := "From: CEO <ceo@bank.test>\r\nTo: b@dest.test\r\nSubject: wire\r\nMessage-ID: <forged@test>\r\n\r\npay now\r\n"
	if r := c.SendMail("ceo@bank.test", []string{"b@dest.test"}, forged); !strings.HasPrefix(r, "550 5.7.1 ") {
		t.Fatalf("forgery at DATA: %q, want 550 5.7.1", r)
	}
	// The same author, with an SPF pass of a subdomain (relaxed
	// alignment), is delivered.
	genuine := strings.ReplaceAll(forged, "forged@test", "genuine@test")
	if r := c.SendMail("bounce@mail.bank.test", []string{"b@dest.test"}, genuine); !strings.HasPrefix(r, "250") {
		t.Fatalf("aligned message at DATA: %q", r)
	}
	delivered(t, down, "genuine@test")
	waitQueueEmpty(t, g)
	for _, m := range down.Messages() {
		if strings.Contains(string(m.Data), "forged@test") {
			t.Fatal("the forgery was delivered")
		}
	}
}
