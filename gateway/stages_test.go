package gateway_test

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages/clamdtest"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// The built-in kinds end to end: each served by the mailgate binary as a
// plugin process, against real clamd and DNS zones on loopback.

const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

func TestEICARRejectedByClamd(t *testing.T) {
	clamd := clamdtest.Start(t)
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "av"
kind = "clamav"
[stage.config]
address = "unix:%s"
`, clamd.Socket()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("eicar-body@test", clamdtest.EICAR+"\r\n")); !strings.HasPrefix(r, "554 5.7.1") {
		t.Fatalf("EICAR as the body: %q", r)
	}
	att := withAttachment("eicar-att@test", "readme.txt", "text/plain", []byte(clamdtest.EICAR))
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, att); !strings.HasPrefix(r, "554 5.7.1") {
		t.Fatalf("EICAR as a base64 attachment: %q", r)
	}
	if strings.Contains(att, clamdtest.EICAR) || !strings.Contains(att, base64.StdEncoding.EncodeToString([]byte(clamdtest.EICAR))[:20]) {
		t.Fatal("the attachment is not base64-encoded")
	}
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("clean@test", "nothing to see\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("clean message: %q", r)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "clean@test" {
		t.Fatal("wrong message delivered")
	}
}

func TestGTUBEPerPolicy(t *testing.T) {
	down := smtptest.NewServer(t)
	spam := "\n[[stage]]\nname = \"spam\"\nkind = \"spam\"\n"
	for _, tc := range []struct {
		policy string
		want   string
	}{
		{"", "550 5.7.1"}, // GTUBE scores 1000, over the default reject_score 15
		{"\n[policy]\nreject_score = 5000.0\nquarantine_score = 10.0\n", "250"}, // quarantined: accepted, not delivered
	} {
		g := startGateway(t, routeTo(down, "dest.test")+spam+tc.policy)
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("gtube@test", gtube+"\r\n")); !strings.HasPrefix(r, tc.want) {
			t.Fatalf("policy %q: GTUBE got %q, want %s", tc.policy, r, tc.want)
		}
		// Refused or quarantined, the message was decided before the
		// reply and never entered the queue: nothing can be delivered.
		if q := queue(t, g); len(q) != 0 {
			t.Fatalf("policy %q: %d messages queued", tc.policy, len(q))
		}
	}
	if n := len(down.Messages()); n != 0 {
		t.Fatalf("GTUBE was delivered %d times", n)
	}
}

func TestDNSBLListedClientRefusedAtRcpt(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"1.0.0.127.zen.blocklist.test.": {"A 127.0.0.2", `TXT "listed for testing"`},
	})
	down := smtptest.NewServer(t)
	var log testkit.SyncBuffer
	conf := routeTo(down, "dest.test") + fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "dnsbl"
kind = "dnsbl"
[stage.config]
[[stage.config.list]]
zone = "zen.blocklist.test"
action = "reject"
`, dns.Addr())
	g := startGatewayOpts(t, conf, gateway.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	// The connect-phase rejection is answered at RCPT, so the log line has
	// the whole envelope.
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "550 5.7.1")
	waitUntil(t, waitLong, "the rejection to be logged", func() bool { return strings.Contains(log.String(), "msg=rejected") })
	var line string
	for _, l := range strings.Split(log.String(), "\n") {
		if strings.Contains(l, "msg=rejected") {
			line = l
		}
	}
	for _, want := range []string{"zen.blocklist.test", "from=a@sender.test", "rcpt=b@dest.test", "phase=connect", "stage=dnsbl", "queue_id="} {
		if !strings.Contains(line, want) {
			t.Errorf("rejection log line lacks %q:\n%s", want, line)
		}
	}
}

// TestDryRunJSON runs `mailgate test -json` with the default chain and the
// SPF record served by a loopback DNS server named in [dns] servers.
func TestDryRunJSON(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"sender.test.": {`TXT "v=spf1 ip4:192.0.2.0/24 -all"`},
	})
	dir := t.TempDir()
	conf := filepath.Join(dir, "mailgate.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[dns]
servers = [%q]
[[route]]
domains = ["dest.test"]
servers = ["127.0.0.1:1"]
[[stage]]
name = "spf"
kind = "spf"
[[stage]]
name = "dnsbl"
kind = "dnsbl"
[[stage.config.list]]
zone = "zen.blocklist.test"
[[stage]]
name = "spam"
kind = "spam"
[[stage]]
name = "headers"
kind = "headers"
[stage.config]
authentication_results = true
spam_headers = true
`, dir, dns.Addr())), 0o644)
	msg := filepath.Join(dir, "msg.eml")
	os.WriteFile(msg, []byte("From: a@sender.test\nTo: b@dest.test\nSubject: hello\nDate: Sun, 22 Nov 2026 10:00:00 +0000\nMessage-ID: <dry@test>\n\nJust a note.\n"), 0o644)
	out, err := exec.Command(mailgateBin, "test", "-config", conf, "-client-ip", "192.0.2.10", "-helo", "mail.sender.test",
		"-from", "a@sender.test", "-to", "b@dest.test", "-json", msg).Output()
	if err != nil {
		t.Fatalf("mailgate test: %v\n%s", err, out)
	}
	var res gateway.DryRunResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if res.Action != "accept" || !strings.HasPrefix(res.Reply, "250 ") {
		t.Fatalf("action %q reply %q\n%s", res.Action, res.Reply, out)
	}
	results := map[string]string{}
	for _, s := range res.Stages {
		if s.Phase == "mail" || s.Phase == "connect" || s.Kind == "spam" {
			results[s.Name] = s.Result
		}
		if s.DurationMS < 0 {
			t.Errorf("stage entry with a negative duration: %+v", s)
		}
	}
	// An action that is there but empty fails the Unmarshal above; one
	// left out would read as continue.
	var raw struct{ Stages []map[string]any }
	json.Unmarshal(out, &raw)
	for _, s := range raw.Stages {
		if _, ok := s["action"]; !ok {
			t.Errorf("stage entry without action: %v", s)
		}
	}
	if results["spf"] != "pass" || results["dnsbl"] != "clean" || results["spam"] != "ham" {
		t.Fatalf("stage results %v\n%s", results, out)
	}
	added := map[string]string{}
	for _, h := range res.HeadersAdded {
		added[h.Name] = h.Value
	}
	if !strings.HasPrefix(added["Received-SPF"], "pass") || !strings.Contains(added["Authentication-Results"], "spf=pass") {
		t.Fatalf("headers added: %v", added)
	}
}

// TestDryRunAddressSyntax: the dry run refuses what the SMTP side refuses.
func TestDryRunAddressSyntax(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "mailgate.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n[[route]]\ndomains = [\"dest.test\"]\nservers = [\"127.0.0.1:1\"]\n", dir)), 0o644)
	msg := filepath.Join(dir, "msg.eml")
	os.WriteFile(msg, []byte("Subject: x\n\nhi\n"), 0o644)
	out, err := exec.Command(mailgateBin, "test", "-config", conf, "-client-ip", "192.0.2.10",
		"-from", "a@sender.test", "-to", "x%evil.test@dest.test", "-json", msg).Output()
	if err != nil {
		t.Fatalf("mailgate test: %v\n%s", err, out)
	}
	var res gateway.DryRunResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatal(err)
	}
	if res.Action != "reject" || res.Reply != "501 5.1.3 Bad recipient address syntax" || res.Phase != "rcpt" {
		t.Fatalf("%+v", res)
	}
}

// TestOneAuthResultPerMethod: spf runs at MAIL and at DATA, and each run
// is a result the headers stage sees; the delivered message must still
// carry one Authentication-Results entry for SPF (RFC 8601 §2.7.2), not
// "spf=pass ...; spf=pass ...".
func TestOneAuthResultPerMethod(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"sender.test.": {`TXT "v=spf1 ip4:127.0.0.0/8 -all"`},
	})
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "headers"
kind = "headers"
[stage.config]
authentication_results = true
`, dns.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO mail.sender.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("authres@test", "hello\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("DATA: %q", r)
	}
	m := delivered(t, down, "authres@test")
	var fields []string
	for _, line := range strings.Split(string(m.Data), "\r\n") {
		if line == "" {
			break
		}
		if strings.HasPrefix(line, " ") || strings.HasPrefix(line, "\t") {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
	}
	var ar []string
	for _, f := range fields {
		if v, ok := strings.CutPrefix(f, "Authentication-Results: "); ok {
			ar = append(ar, v)
		}
	}
	// The HELO name's own result (none: mail.sender.test publishes no
	// SPF) is in the stage's reason; its smtp.helo must not be taken for a
	// property of the MAIL FROM result.
	if want := "mx.gateway.test; spf=pass smtp.mailfrom=sender.test"; len(ar) != 1 || ar[0] != want {
		t.Fatalf("Authentication-Results fields %q; want one: %q", ar, want)
	}
}
