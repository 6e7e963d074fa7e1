package router

import (
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

func TestQuoteAddr(t *testing.T) {
	for in, want := range map[string]string{
		"":                      "",
		"a@b.test":              "a@b.test",
		"first.last+tag@b.test": "first.last+tag@b.test",
		"ü@bücher.test":         "ü@bücher.test",
		"x@evil.test@dest.test": `"x@evil.test"@dest.test`,
		"a..b@dest.test":        `"a..b"@dest.test`,
		".a@dest.test":          `".a"@dest.test`,
		`say"hi\@dest.test`:     `"say\"hi\\"@dest.test`,
		"a(b)@dest.test":        `"a(b)"@dest.test`,
		"postmaster":            "postmaster",
		"x%evil.test@dest.test": "x%evil.test@dest.test", // atext; only smtpd refuses it from strangers
	} {
		if got := quoteAddr(in); got != want {
			t.Errorf("quoteAddr(%q) = %q, want %q", in, got, want)
		}
	}
}

// A local part that came quoted leaves quoted again: sent bare, the next
// hop would take the "@" in it for the domain's and relay further.
func TestQuotedLocalPartRequoted(t *testing.T) {
	srv := smtptest.NewServer(t)
	h := start(t, testConfig(serverRoute("dest.test", srv)), openSpool(t))
	h.send(`odd"one@sender.test`, []string{"x@evil.test@dest.test", "plain@dest.test"}, sample)
	m := srv.WaitFor(1, waitLong)[0]
	if len(m.Rcpts) != 2 || m.Rcpts[0] != "x@evil.test@dest.test" {
		t.Fatalf("recipients at the next hop: %q", m.Rcpts)
	}
	wire := srv.Transcripts()[0]
	for _, want := range []string{"MAIL FROM:<\"odd\\\"one\"@sender.test>", "RCPT TO:<\"x@evil.test\"@dest.test>\r\n", "RCPT TO:<plain@dest.test>\r\n"} {
		if !strings.Contains(wire, want) {
			t.Errorf("no %q on the wire:\n%s", want, wire)
		}
	}
}
