package gateway_test

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/stages/smtptest"
)

type smugglingVectors struct {
	Variants []struct {
		Name   string `yaml:"name"`
		Inject string `yaml:"inject"`
	} `yaml:"eod_variants"`
}

func loadSmugglingVectors(t *testing.T) smugglingVectors {
	t.Helper()
	b, err := os.ReadFile("testdata/smtp-smuggling-vectors.yml")
	if err != nil {
		t.Fatal(err)
	}
	var v smugglingVectors
	if err := yaml.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.Variants) < 13 {
		t.Fatalf("only %d vectors loaded", len(v.Variants))
	}
	return v
}

// smuggle sends one message whose body carries inject followed by a whole
// second transaction, then QUIT, and returns every reply after DATA's 354.
func smuggle(t *testing.T, c *client, inject string) []string {
	t.Helper()
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("DATA", "354")
	c.Send("Subject: carrier\r\nMessage-ID: <carrier@test>\r\n\r\nfirst line\r\n" + inject +
		"MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n" +
		"Subject: smuggled\r\nMessage-ID: <smuggled@test>\r\n\r\nsmuggled body\r\n" +
		"\r\n.\r\nQUIT\r\n")
	var replies []string
	for {
		r := c.Reply()
		replies = append(replies, r)
		if strings.HasPrefix(r, "221") || len(replies) > 8 {
			return replies
		}
	}
}

// hasBareLineEnd reports a CR not followed by LF or an LF not preceded by CR.
func hasBareLineEnd(b []byte) bool {
	for i, c := range b {
		if c == '\n' && (i == 0 || b[i-1] != '\r') {
			return true
		}
		if c == '\r' && (i+1 == len(b) || b[i+1] != '\n') {
			return true
		}
	}
	return false
}

// TestSmuggling sends every end-of-DATA variant of the shared vectors. In
// both modes the gateway must see exactly one message or reject it, never
// act on the smuggled commands, and relay only CRLF line ends.
func TestSmuggling(t *testing.T) {
	vectors := loadSmugglingVectors(t)
	for _, mode := range []string{"normalize", "reject"} {
		t.Run(mode, func(t *testing.T) {
			down := smtptest.NewServer(t)
			g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\nbare_lf = \""+mode+"\"\n"+routeTo(down, "dest.test"))
			accepted := 0
			for _, v := range vectors.Variants {
				c := dial(t, g.SMTPAddrs()[0])
				replies := smuggle(t, c, v.Inject)
				if len(replies) != 2 {
					t.Errorf("%s: replies %q; want one reply to the message, then 221", v.Name, replies)
					continue
				}
				switch {
				case strings.HasPrefix(replies[0], "250 "):
					accepted++
				case strings.HasPrefix(replies[0], "550 5.5.2") && mode == "reject":
				default:
					t.Errorf("%s: reply %q", v.Name, replies[0])
				}
				// Every bare CR or LF reaches the reject check, a CR right
				// after a line-initial dot included (go-smtp patch 4).
				bare := hasBareLineEnd([]byte("\r\n" + v.Inject + "M"))
				if mode == "reject" && bare && !strings.HasPrefix(replies[0], "550 5.5.2 ") {
					t.Errorf("%s: reject mode replied %q to a bare CR or LF", v.Name, replies[0])
				}
			}
			down.WaitFor(accepted, waitLong)
			waitQueueEmpty(t, g)
			msgs := down.Messages()
			if len(msgs) != accepted {
				t.Fatalf("%d messages relayed, %d accepted", len(msgs), accepted)
			}
			for _, m := range msgs {
				if len(m.Rcpts) != 1 || m.Rcpts[0] != "b@dest.test" || m.From != "a@sender.test" {
					t.Errorf("smuggled envelope relayed: %q -> %q", m.From, m.Rcpts)
				}
				if !bytes.Contains(m.Data, []byte("smuggled body")) {
					t.Errorf("the smuggled part is not inside the one message:\n%q", m.Data)
				}
				if hasBareLineEnd(m.Data) {
					t.Errorf("relayed message has a bare CR or LF:\n%q", m.Data)
				}
			}
		})
	}
}
