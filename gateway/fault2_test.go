package gateway_test

import (
	"fmt"
	"net"
	"strings"
	"testing"

	"github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// More of the fault suite: DNS that never answers, a dead internal server,
// a slow milter and one that hangs up.

// blackholeDNS is a DNS server address that reads queries and never answers.
func blackholeDNS(t *testing.T) string {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			if _, _, err := pc.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	return pc.LocalAddr().String()
}

func streamOf(t *testing.T, c *client, l *ledger, prefix string, n int) {
	t.Helper()
	for i := range n {
		id := fmt.Sprintf("%s%d@test", prefix, i)
		l.record(id, c.TrySend("a@sender.test", []string{"b@dest.test"}, message(id, "x\r\n")))
	}
}

// TestDNSNotAnswering: SPF gives temperror, which the policy maps (here to
// tempfail: 451, nothing lost), and a DNSBL that times out fails open.
func TestDNSNotAnswering(t *testing.T) {
	dnsAddr := blackholeDNS(t)
	for _, tc := range []struct {
		name, spfActions, want string
	}{
		{"temperror tempfails", "[stage.results]\ntemperror = \"tempfail\"\n", "451 4.7.24"},
		{"temperror continues, dnsbl fails open", "", "250"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			down := smtptest.NewServer(t)
			g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[dns]
servers = [%q]
[[stage]]
name = "dnsbl"
kind = "dnsbl"
[stage.config]
dns_timeout = "300ms"
[[stage.config.list]]
zone = "zen.blocklist.test"
action = "reject"
[[stage]]
name = "spf"
kind = "spf"
[stage.config]
dns_timeout = "300ms"
%s`, dnsAddr, tc.spfActions))
			c := dial(t, g.SMTPAddrs()[0])
			c.Cmd("EHLO client.test", "250")
			l := newLedger()
			streamOf(t, c, l, "dns", 4)
			for id, r := range l.refused {
				if tc.want == "250" || !strings.HasPrefix(r, tc.want) {
					t.Errorf("%s: %q, want %s", id, r, tc.want)
				}
			}
			if tc.want == "250" && len(l.acked) != 4 {
				t.Errorf("acknowledged %d of 4", len(l.acked))
			}
			l.check(t, g, down)
		})
	}
}

// TestFailoverOneServerDown: the route's first server refuses connections;
// every message goes to the second, once.
func TestFailoverOneServerDown(t *testing.T) {
	dead := testkit.FreeAddr(t)
	live := smtptest.NewServer(t)
	g := startGateway(t, fmt.Sprintf("\n[delivery]\nretry_min = \"50ms\"\nretry_max = \"200ms\"\n[[route]]\ndomains = [\"dest.test\"]\nservers = [%q, %q]\n", dead, live.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	l := newLedger()
	streamOf(t, c, l, "fo", 10)
	if len(l.acked) != 10 {
		t.Fatalf("refused: %v", l.refused)
	}
	l.check(t, g, live)
}

// stalledMilter answers the end of a message only once release is
// closed, at the end of the test: however loaded the machine, it is
// slower than any timeout.
type stalledMilter struct {
	milter.NoOpMilter
	release <-chan struct{}
}

func (s stalledMilter) Body(m *milter.Modifier) (milter.Response, error) {
	<-s.release
	m.AddHeader("X-Milter", "seen")
	return milter.RespContinue, nil
}

// hangUp closes the connection when the message ends.
type hangUp struct{ milter.NoOpMilter }

func (hangUp) Body(*milter.Modifier) (milter.Response, error) {
	return nil, fmt.Errorf("closing mid-conversation")
}

// TestMilterSlowOrHangingUp: a milter slower than its timeout, and one that
// closes mid-conversation, get default_action (skip: the mail goes on
// unfiltered) at the milter's own content_timeout, and nothing is lost.
// The stage's timeout is far longer: were content_timeout not enforced,
// the stalled milter would hold the reply past the client's deadline.
func TestMilterSlowOrHangingUp(t *testing.T) {
	for _, tc := range []struct {
		name    string
		backend func(release <-chan struct{}) milter.Milter
	}{
		{"slow", func(release <-chan struct{}) milter.Milter { return stalledMilter{release: release} }},
		{"hangs up", func(<-chan struct{}) milter.Milter { return hangUp{} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			release := make(chan struct{})
			serveMilter(t, ln, func() milter.Milter { return tc.backend(release) })
			down := smtptest.NewServer(t)
			g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "m"
kind = "milter"
timeout = "10m"
[stage.config]
address = "inet:%s"
default_action = "skip"
command_timeout = "500ms"
content_timeout = "500ms"
`, ln.Addr()))
			// Cleanups run last first: the milter is released before
			// the gateway and the milter server stop.
			t.Cleanup(func() { close(release) })
			c := dial(t, g.SMTPAddrs()[0])
			c.Cmd("EHLO client.test", "250")
			l := newLedger()
			streamOf(t, c, l, "ms", 3)
			if len(l.acked) != 3 {
				t.Fatalf("refused: %v", l.refused)
			}
			l.check(t, g, down)
		})
	}
}
