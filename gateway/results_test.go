package gateway_test

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/clamdtest"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestClamavResultsQuarantine: [stage.results] is the one way to choose
// another action than the kind's: with infected = "quarantine" a virus
// found by a real clamd is accepted into the quarantine instead of
// refused, names the mapping, and is not delivered, while clean mail is.
func TestClamavResultsQuarantine(t *testing.T) {
	clamd := clamdtest.Start(t)
	down := smtptest.NewServer(t)
	fg := startFromFile(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "av"
kind = "clamav"
[stage.config]
address = "unix:%s"
[stage.results]
infected = "quarantine"
`, clamd.Socket()))
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message("eicar@test", clamdtest.EICAR+"\r\n")))
	if out := fg.must("quarantine", "list", "-stage", "av"); !strings.Contains(out, id) {
		t.Errorf("quarantine list -stage av does not list %s:\n%s", id, out)
	}
	if show := fg.must("quarantine", "show", id); !strings.Contains(show, "stage results: infected = quarantine") ||
		!strings.Contains(show, "signature "+clamdtest.Signature) {
		t.Errorf("quarantine show does not name the signature and the mapping:\n%s", show)
	}
	// Held by the stage's action, not by score: end users may not
	// release it (package console).
	if js := fg.must("quarantine", "show", "-json", id); strings.Contains(js, `"by_score"`) {
		t.Errorf("a virus hold is recorded as by score:\n%s", js)
	}
	// The quarantined message was never queued for delivery: the clean one
	// sent after it is the only one to arrive.
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("clean@test", "nothing to see\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("clean message: %q", r)
	}
	if msgs := down.WaitFor(1, 10*time.Second); len(msgs) != 1 || messageID(msgs[0].Data) != "clean@test" {
		t.Fatalf("delivered %d messages, the first %q; want only clean@test", len(msgs), messageID(msgs[0].Data))
	}
}
