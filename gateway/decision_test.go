package gateway_test

import (
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestScoreDecisionNamesStages: a message quarantined on the spam stage's
// score names the spam stage and its rules as what decided, in the
// quarantine record, in `quarantine list -stage`, and in the trace.
func TestScoreDecisionNamesStages(t *testing.T) {
	down := smtptest.NewServer(t)
	fg := startFromFile(t, routeTo(down, "dest.test")+`
[[stage]]
name = "spam"
kind = "spam"
[stage.config]
default_rules = false
[[stage.config.rule]]
name = "WIRE_TRANSFER"
body = "(?i)wire transfer"
score = 12
`)
	c := dial(t, fg.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message("scored@test", "Please send a wire transfer today.\r\n")))

	if out := fg.must("quarantine", "list", "-stage", "spam"); !strings.Contains(out, id) {
		t.Errorf("quarantine list -stage spam does not list %s:\n%s", id, out)
	}
	show := fg.must("quarantine", "show", id)
	if !regexp.MustCompile(`stage:\s+spam`).MatchString(show) || !strings.Contains(show, "scored by spam 12 (WIRE_TRANSFER=12)") {
		t.Errorf("quarantine show does not name the spam stage and its rule:\n%s", show)
	}
	if js := fg.must("quarantine", "show", "-json", id); !strings.Contains(js, `"by_score": true`) {
		t.Errorf("a hold by score is not recorded as such:\n%s", js)
	}
	// The same selection releases it.
	if out := fg.must("quarantine", "release", "-stage", "spam"); !strings.Contains(out, id+": released, queued as ") {
		t.Errorf("quarantine release -stage spam:\n%s", out)
	}
	if tr := fg.must("trace", id); !strings.Contains(tr, "stage=spam") || !strings.Contains(tr, "WIRE_TRANSFER=12") {
		t.Errorf("trace does not name the deciding stage:\n%s", tr)
	}
}
