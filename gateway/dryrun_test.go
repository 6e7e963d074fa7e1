package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

// The same transactions through the SMTP side over a real socket and
// through `mailgate test`'s DryRun: both run smtpd's driver, so they must
// come to the same decision, the same reply and the same header edits
// (Received, the stages' rewrites and policy's tag included). The dry run
// asks verify_rcpts routes too, and reads the recipients' own allow- and
// block-lists: a sender a recipient blocked is refused alike.
func TestDryRunMatchesSMTP(t *testing.T) {
	down := smtptest.NewServer(t)
	down.SetRcptReply("unknown@dest.test", 550)
	dir := t.TempDir()
	config := fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
max_hops = 3
[policy]
tag_headers = ["X-Spam-Flag: YES"]
[[route]]
domains = ["dest.test"]
servers = [%q]
verify_rcpts = true
[[stage]]
name = "spam"
kind = "spam"
[[stage.config.rule]]
name = "TAG_ME"
score = 6.0
header = "Subject"
pattern = "TAGME"
[[stage.config.rule]]
name = "HOLD_ME"
score = 11.0
header = "Subject"
pattern = "HOLDME"
[[stage.config.rule]]
name = "REJECT_ME"
score = 20.0
header = "Subject"
pattern = "REJECTME"
[[stage]]
name = "headers"
kind = "headers"
[stage.config]
spam_headers = true
[[stage.config.rule]]
action = "rewrite"
name = "Subject"
pattern = "rewrite-me"
replacement = "rewritten"
[[stage.config.rule]]
action = "remove"
name = "X-Internal"
`, dir, down.Addr())
	cfg, err := policy.Parse("test.toml", []byte(config))
	if err != nil {
		t.Fatal(err)
	}
	opts := gateway.Options{Logger: testLogger(t), PluginCommand: func(kind string) []string { return []string{mailgateBin, "plugin", kind} }}
	g, err := gateway.New(context.Background(), cfg, opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		g.Shutdown(ctx)
	})
	// The recipients' own lists, as the console writes them: the gateway
	// and the dry run read the same store.
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(dir, "state.db"), sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	for _, e := range []state.ListEntry{
		{Owner: "picky@dest.test", Kind: state.Block, Sender: "sender.test", By: "test"},
		{Owner: "trusting@dest.test", Kind: state.Allow, Sender: "a@sender.test", By: "test"},
	} {
		if err := st.Lists().Add(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.sender.test", "250")

	msg := func(subject string, extra ...string) string {
		return strings.Join(append(extra, "From: a@sender.test", "To: b@dest.test", "Subject: "+subject,
			"Date: Sun, 22 Nov 2026 10:00:00 +0000", "Message-ID: <"+strings.ReplaceAll(subject, " ", ".")+"@test>", "", "Hello.", ""), "\r\n")
	}
	hops := []string{"Received: from a", "Received: from b", "Received: from c", "Received: from d"}
	for _, tc := range []struct {
		name, rcpt, msg string
		action, reply   string // what both must say
	}{
		{"accepted", "b@dest.test", msg("hello"), "accept", "250 2.0.0 Ok: queued as ID"},
		{"tagged", "b@dest.test", msg("TAGME please"), "tag", "250 2.0.0 Ok: queued as ID"},
		{"rejected by score", "b@dest.test", msg("REJECTME now"), "reject", "550 5.7.1 Message rejected"},
		{"relay denied", "b@other.test", msg("hello"), "reject", "554 5.7.1 Relay access denied"},
		{"bad address", "x%evil.test@dest.test", msg("hello"), "reject", "501 5.1.3 Bad recipient address syntax"},
		{"unknown user", "unknown@dest.test", msg("hello"), "reject", "550 5.1.1 Recipient address rejected"},
		{"quarantined", "b@dest.test", msg("HOLDME later"), "quarantine", "250 2.0.0 Ok: queued as ID"},
		{"too many hops", "b@dest.test", msg("loop", hops...), "reject", "554 5.4.6 Too many hops"},
		{"rewritten", "b@dest.test", msg("please rewrite-me", "X-Internal: secret"), "accept", "250 2.0.0 Ok: queued as ID"},
		{"blocked by the recipient", "picky@dest.test", msg("hello"), "reject", "550 5.7.1 Message rejected"},
		{"allowed by the recipient", "trusting@dest.test", msg("HOLDME later"), "accept", "250 2.0.0 Ok: queued as ID"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c.SetTest(t)
			// Over the wire.
			relayed := len(down.Messages())
			reply := c.TrySend("a@sender.test", []string{tc.rcpt}, dotStuff(tc.msg))
			_, id, _ := strings.Cut(reply, "queued as ")
			wire := lastDecision(t, filepath.Join(dir, "trace"))
			var wireHeader []byte
			switch {
			case wire.Action == "quarantine":
				b, err := os.ReadFile(filepath.Join(dir, "quarantine", id+".eml"))
				if err != nil {
					t.Fatal(err)
				}
				wireHeader = b
			case strings.HasPrefix(reply, "250 "):
				wireHeader = down.WaitFor(relayed+1, 10*time.Second)[relayed].Data
			}
			// Dry run.
			res, err := gateway.DryRun(context.Background(), cfg, opts, gateway.DryRunInput{
				ClientIP: netip.MustParseAddr("127.0.0.1"), Helo: "client.sender.test",
				From: "a@sender.test", To: []string{tc.rcpt}, Message: []byte(tc.msg),
			})
			if err != nil {
				t.Fatal(err)
			}
			_, dryID, _ := strings.Cut(res.Reply, "queued as ")

			wireAction := strings.Replace(wire.Action, "continue", "accept", 1)
			if wireAction != tc.action || res.Action != tc.action {
				t.Errorf("action: SMTP %q, dry run %q, want %q", wireAction, res.Action, tc.action)
			}
			if res.Stage != wire.Stage {
				t.Errorf("decided by: SMTP %q, dry run %q", wire.Stage, res.Stage)
			}
			if r := noID(wire.Reply, id); r != tc.reply || r != noID(reply, id) {
				t.Errorf("SMTP reply %q, traced %q, want %q", reply, wire.Reply, tc.reply)
			}
			if r := noID(res.Reply, dryID); r != tc.reply {
				t.Errorf("dry run reply %q, want %q", res.Reply, tc.reply)
			}
			var dryAdded, dryRemoved []string
			for _, h := range res.HeadersAdded {
				dryAdded = append(dryAdded, normalize(h.Name+": "+h.Value, dryID))
			}
			for _, h := range res.HeadersRemoved {
				dryRemoved = append(dryRemoved, normalize(h.Name+": "+h.Value, dryID))
			}
			wireAdded, wireRemoved := headerChanges(t, tc.msg, wireHeader, id)
			t.Logf("%s: %s; added %q, removed %q", wireAction, noID(reply, id), wireAdded, wireRemoved)
			if !slices.Equal(wireAdded, dryAdded) || !slices.Equal(wireRemoved, dryRemoved) {
				t.Errorf("headers\nSMTP added %q removed %q\ndry run added %q removed %q", wireAdded, wireRemoved, dryAdded, dryRemoved)
			}
			if wireHeader != nil && !slices.ContainsFunc(wireAdded, func(h string) bool { return strings.HasPrefix(h, "Received: ") }) {
				t.Errorf("no Received field added: %q", wireAdded)
			}
		})
	}
}

// lastDecision is the last event of the trace in dir that answered a
// recipient or a message.
func lastDecision(t *testing.T, dir string) trace.Event {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, "*"))
	var last trace.Event
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range bytes.Split(b, []byte("\n")) {
			var e trace.Event
			if json.Unmarshal(line, &e) == nil && e.Reply != "" && (e.Event == "rcpt" || e.Event == "data") {
				last = e
			}
		}
	}
	return last
}

// headerChanges lists the fields the gateway added to msg and removed
// from it in got (nil: nothing was taken), as DryRun lists them.
func headerChanges(t *testing.T, msg string, got []byte, id string) (added, removed []string) {
	t.Helper()
	if got == nil {
		return nil, nil
	}
	fields := func(b []byte) []string {
		h, err := stages.ParseHeader(bufio.NewReader(bytes.NewReader(b)))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, f := range h {
			out = append(out, f.Name+": "+stages.Unfold(f.Value))
		}
		return out
	}
	// minus is a without the fields of b, duplicates counted.
	minus := func(a, b []string) []string {
		var out []string
		for _, f := range a {
			if i := slices.Index(b, f); i >= 0 {
				b = slices.Delete(slices.Clone(b), i, i+1)
				continue
			}
			out = append(out, normalize(f, id))
		}
		return out
	}
	sent, taken := fields([]byte(msg)), fields(got)
	return minus(taken, sent), minus(sent, taken)
}

var receivedDate = regexp.MustCompile(`; [^;]*$`)

// normalize takes the queue ID and the time out of a field.
func normalize(v, id string) string {
	return receivedDate.ReplaceAllString(noID(v, id), "; DATE")
}

// noID writes the queue ID id ("" for none) in s as "ID".
func noID(s, id string) string {
	if id == "" {
		return s
	}
	return strings.ReplaceAll(s, id, "ID")
}

func dotStuff(msg string) string {
	return strings.ReplaceAll(msg, "\r\n.", "\r\n..")
}
