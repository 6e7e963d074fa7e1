package gateway_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// exampleRoutes is the route layout of examples/gateway.toml: our domains
// to the internal servers, and "*" to the MX hosts for the outbound mail
// of trusted clients and for DSNs.
func exampleRoutes(down *smtptest.Server) string {
	return fmt.Sprintf(`
[[route]]
domains = ["dest.test", "*.dest.test"]
servers = [%q]

[[route]]
domains = ["*"]
mx = true
`, down.Addr())
}

// The catch-all route must not make the gateway an open relay: an
// untrusted client may only send to domains a route names.
func TestCatchAllRouteIsNotRelay(t *testing.T) {
	down := smtptest.NewServer(t)
	for _, tc := range []struct {
		trusted string
		want    string
	}{
		{`["10.0.0.0/8"]`, "554 5.7.1 "},
		{`["127.0.0.0/8"]`, "250 "},
	} {
		g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\ntrusted_networks = "+tc.trusted+"\n"+exampleRoutes(down))
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		if r := c.Cmd("RCPT TO:<x@gmail.test>", ""); !strings.HasPrefix(r, tc.want) {
			t.Errorf("trusted_networks = %s: RCPT TO:<x@gmail.test> = %q, want %q", tc.trusted, r, tc.want)
		}
		// Our own domains are open to everyone.
		c.Cmd("RCPT TO:<x@dest.test>", "250")
		c.Cmd("RCPT TO:<x@a.dest.test>", "250")
	}
}
