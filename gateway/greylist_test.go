package gateway_test

import (
	"context"
	"fmt"
	"io/fs"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// greylistStage is a greylist stage with a delay of a second: the plugin
// process keeps real time, so the test waits for the retry to pass rather
// than moving a clock it cannot reach (the stage's own tests do that).
const greylistStage = `
[[stage]]
name = "greylist"
kind = "greylist"
[stage.config]
delay = "1s"
retry_window = "1h"
auto_allow = 0
`

// TestGreylistRefusedThenAccepted: a new sender is refused at RCPT with
// 451 4.7.1 and nothing is delivered; its retries are refused until the
// delay has passed, then one is accepted and delivered once.
func TestGreylistRefusedThenAccepted(t *testing.T) {
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+greylistStage)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	msg := message("greylisted@test", "try again\r\n")
	if r := c.TrySend("a@sender.test", []string{"b@dest.test"}, msg); r != "451 4.7.1 Greylisted, please try again later" {
		t.Fatalf("first attempt: %q", r)
	}
	tries := 1
	waitUntil(t, waitLong, "a retry to be accepted", func() bool {
		tries++
		r := c.TrySend("a@sender.test", []string{"b@dest.test"}, msg)
		if strings.HasPrefix(r, "451 4.7.1") {
			return false
		}
		if !strings.HasPrefix(r, "250") {
			t.Fatalf("retry %d: %q", tries, r)
		}
		return true
	})
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "greylisted@test" {
		t.Fatal("wrong message delivered")
	}
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d deliveries after %d tries; want 1", n, tries)
	}
	// Passed now: accepted at once, on a new connection too.
	c2 := dial(t, g.SMTPAddrs()[0])
	c2.Cmd("EHLO client.test", "250")
	if r := c2.SendMail("a@sender.test", []string{"b@dest.test"}, message("again@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("passed triplet: %q", r)
	}
	// Another recipient is another triplet.
	if r := c2.TrySend("a@sender.test", []string{"other@dest.test"}, msg); !strings.HasPrefix(r, "451 4.7.1") {
		t.Fatalf("new recipient: %q", r)
	}
}

// TestGreylistSkipsSPFPass: the spf stage's verdict at MAIL reaches the
// greylist stage at RCPT; a sender whose SPF passes for the client is not
// greylisted, one without SPF is.
func TestGreylistSkipsSPFPass(t *testing.T) {
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
`, dns.Addr())+greylistStage)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("spf-pass@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("SPF pass: %q", r)
	}
	if r := c.TrySend("a@nospf.test", []string{"b@dest.test"}, message("no-spf@test", "hi\r\n")); !strings.HasPrefix(r, "451 4.7.1") {
		t.Fatalf("no SPF: %q", r)
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "spf-pass@test" {
		t.Fatal("wrong message delivered")
	}
}

// TestDryRunLeavesGreylistAlone: `mailgate test` runs the greylist stage
// on a copy of its store: the dry run is greylisted as the gateway would
// greylist it, and the triplets the gateway keeps are as they were, so the
// client the dry run named is still new to the gateway.
func TestDryRunLeavesGreylistAlone(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := t.TempDir()
	config := routeTo(down, "dest.test") + strings.Replace(greylistStage, `delay = "1s"`, `delay = "30m"`, 1)
	g := startGatewayIn(t, dir, config, gateway.Options{Logger: testLogger(t)})
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.TrySend("known@sender.test", []string{"b@dest.test"}, message("known@test", "hi\r\n")); !strings.HasPrefix(r, "451 4.7.1") {
		t.Fatalf("first attempt: %q", r)
	}
	store := filepath.Join(dir, "greylist")
	before := readTree(t, store)

	cfg, err := policy.Parse("test.toml", []byte(fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n", dir)+config))
	if err != nil {
		t.Fatal(err)
	}
	opts := gateway.Options{Logger: testLogger(t), PluginCommand: func(kind string) []string { return []string{mailgateBin, "plugin", kind} }}
	res, err := gateway.DryRun(context.Background(), cfg, opts, gateway.DryRunInput{
		ClientIP: netip.MustParseAddr("127.0.0.1"), Helo: "client.test", From: "new@sender.test", To: []string{"b@dest.test"},
		Message: []byte("Subject: x\n\nhi\n"),
	})
	if err != nil {
		t.Fatal(err)
	}
	if res.Reply != "451 4.7.1 Greylisted, please try again later" || res.Phase != "rcpt" {
		t.Errorf("dry run: reply %q at %s, want 451 4.7.1 at rcpt", res.Reply, res.Phase)
	}
	if after := readTree(t, store); !maps.Equal(after, before) {
		t.Errorf("the dry run changed the gateway's greylist store:\nbefore %q\nafter  %q", before, after)
	}
}

// readTree returns the files under dir by path, with their contents.
func readTree(t *testing.T, dir string) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		files[path] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}
