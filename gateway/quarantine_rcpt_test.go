package gateway_test

import (
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestQuarantineReleaseToSomeRecipients: `mailgate quarantine release
// -rcpt` delivers a held message to those recipients only, and once: a
// second release to one of them is refused, an address that is not a
// recipient too; the others stay held, and a plain release then delivers
// to them alone. With a selection, each message picked goes to those of
// the addresses it is still held for.
func TestQuarantineReleaseToSomeRecipients(t *testing.T) {
	down := smtptest.NewServer(t)
	fg := startFromFile(t, routeTo(down, "dest.test")+pluginStage("holdall", testPluginBin, "", "", `action = "quarantine"`))
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test", "c@dest.test", "d@dest.test"}, message("three@test", "held\r\n")))
	other := queuedAs(t, c.SendMail("news@other.test", []string{"b@dest.test", "c@dest.test"}, message("two@test", "held\r\n")))

	out := fg.must("quarantine", "release", "-rcpt", "b@dest.test,C@DEST.test", id)
	if !regexp.MustCompile(`released to b@dest.test, C@DEST.test, queued as \S+`).MatchString(out) {
		t.Fatalf("release -rcpt said:\n%s", out)
	}
	got := downstreamWith(t, down, "three@test", 1)
	if rc := slices.Sorted(slices.Values(got[0].Rcpts)); len(got) != 1 || strings.Join(rc, ",") != "b@dest.test,c@dest.test" {
		t.Fatalf("the release went to %v, want b and c", got[0].Rcpts)
	}
	if out, ok := fg.mailgate("quarantine", "release", "-rcpt", "c@dest.test", id); ok || !strings.Contains(out, "already released") {
		t.Errorf("a second release to c (ok=%v):\n%s", ok, out)
	}
	if out, ok := fg.mailgate("quarantine", "release", "-rcpt", "x@dest.test", id); ok || !strings.Contains(out, "not a recipient") {
		t.Errorf("a release to one who is not a recipient (ok=%v):\n%s", ok, out)
	}
	// An empty -rcpt (an unset shell variable) is refused, not taken for
	// every recipient: d is still held after it.
	if out, ok := fg.mailgate("quarantine", "release", "-rcpt", " , ", id); ok || !strings.Contains(out, "no address") {
		t.Errorf("a release with an empty -rcpt (ok=%v):\n%s", ok, out)
	}
	if out := fg.must("quarantine", "release", id); !strings.Contains(out, "released, queued as") {
		t.Fatalf("release of the rest said:\n%s", out)
	}
	if out, ok := fg.mailgate("quarantine", "release", id); ok || !strings.Contains(out, "already released") {
		t.Errorf("a third release (ok=%v):\n%s", ok, out)
	}

	// A selection: the message from news@ goes to c alone.
	if out := fg.must("quarantine", "release", "-from", "news@other.test", "-rcpt", "c@dest.test"); !strings.Contains(out, other+": released to c@dest.test, queued as") {
		t.Fatalf("release -from -rcpt said:\n%s", out)
	}
	waitQueueEmpty(t, fg.Gateway)
	var deliveries []string
	for _, m := range down.Messages() {
		deliveries = append(deliveries, messageID(m.Data)+" "+strings.Join(slices.Sorted(slices.Values(m.Rcpts)), ","))
	}
	slices.Sort(deliveries)
	if want := []string{"three@test b@dest.test,c@dest.test", "three@test d@dest.test", "two@test c@dest.test"}; !slices.Equal(deliveries, want) {
		t.Fatalf("deliveries %q, want %q", deliveries, want)
	}
}
