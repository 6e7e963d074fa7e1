package pipeline

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// overridden has a strict policy for one mailbox and a lenient one, which
// tags without touching the subject, for a domain.
func overridden() policy.Policy {
	none := ""
	p := defaultPolicy
	p.TagHeaders = []string{"X-Spam-Flag: YES"}
	p.Overrides = []policy.Override{
		{Name: "legal", Rcpts: []string{"legal@example.test"}, TagScore: 2, QuarantineScore: 4, RejectScore: 8},
		{Name: "marketing", Domains: []string{"marketing.example.test"}, QuarantineScore: 20, RejectScore: 30,
			SubjectTag: &none, TagHeaders: []string{"X-Marketing-Spam: yes"}},
	}
	return p
}

// counting is a stage of every phase that counts its calls.
func counting(name string, v stages.Verdict) *fake {
	return &fake{name: name, info: stages.Info{Kind: "fake", Phases: stages.AllPhases},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) { return v, nil }}
}

// addRcpt runs the rcpt phase for rcpt as smtpd does: the recipient is
// added, and taken back out when refused.
func addRcpt(s *Session, tx *stages.Transaction, rcpt string) Decision {
	tx.Rcpts = append(tx.Rcpts, rcpt)
	d := s.Run(context.Background(), stages.Rcpt, tx, nil)
	if d.Action == stages.Reject || d.Action == stages.TempFail {
		tx.Rcpts = tx.Rcpts[:len(tx.Rcpts)-1]
	}
	return d
}

func replyText(d Decision) string {
	if d.Reply == nil {
		return ""
	}
	return d.Reply.String()
}

// The same verdicts give each recipient's policy its own action and tags.
func TestOverridesDecidePerRecipient(t *testing.T) {
	for _, c := range []struct {
		rcpt    string
		want    stages.Action
		policy  string
		subject string
		added   stages.Header
	}{
		{"user@example.test", stages.Tag, "default", "[SPAM] hello", stages.Header{{Name: "X-Spam-Flag", Value: "YES"}}},
		{"Legal@Example.TEST", stages.Quarantine, "legal", "hello", nil},
		{"team@marketing.example.test", stages.Tag, "marketing", "hello", stages.Header{{Name: "X-Marketing-Spam", Value: "yes"}}},
	} {
		t.Run(c.rcpt, func(t *testing.T) {
			p := newPipeline(t, overridden(), returns("spam", stages.Verdict{Score: 6, Result: "spam"}))
			s := p.Begin().Fork()
			tx := newTx()
			tx.Rcpts = nil
			if d := addRcpt(s, tx, c.rcpt); d.Action != stages.Continue || d.Policy != c.policy {
				t.Fatalf("rcpt: %s under policy %q, want continue under %q", d.Action, d.Policy, c.policy)
			}
			d := s.Run(context.Background(), stages.Data, tx, nil)
			if d.Action != c.want || d.Policy != c.policy {
				t.Errorf("data: %s under policy %q (%s), want %s under %q", d.Action, d.Policy, d.Reason, c.want, c.policy)
			}
			if got := tx.Header.Get("Subject"); got != c.subject {
				t.Errorf("subject %q, want %q", got, c.subject)
			}
			if got := tx.Header[len(newTx().Header):]; !slices.Equal(got, c.added) {
				t.Errorf("added header fields %q, want %q", got, c.added)
			}
		})
	}
}

// A recipient whose policy differs from the first accepted one's is
// deferred with 452 4.5.3, before any stage runs for it; recipients of the
// same policy still join.
func TestRecipientsWithDifferentPoliciesAreSplit(t *testing.T) {
	rcptCheck := &fake{name: "users", info: stages.Info{Kind: "users", Phases: stages.Rcpt},
		run: func(_ context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
			if strings.HasPrefix(tx.Rcpts[len(tx.Rcpts)-1], "gone@") {
				return stages.Verdict{Action: stages.Reject}, nil
			}
			return stages.Verdict{}, nil
		}}
	p := newPipeline(t, overridden(), rcptCheck)
	s := p.Begin().Fork()
	tx := newTx()
	tx.Rcpts = nil

	steps := []struct {
		rcpt, want, stage, policy string
	}{
		// A refused recipient does not set the transaction's policy.
		{"gone@marketing.example.test", "550 5.7.1 Message rejected", "users", "marketing"},
		{"user@example.test", "", "", "default"},
		{"legal@example.test", "452 4.5.3 Recipients with different policies, send separately", "policy.split", "default"},
		{"team@marketing.example.test", "452 4.5.3 Recipients with different policies, send separately", "policy.split", "default"},
		{"other@example.test", "", "", "default"},
	}
	for _, st := range steps {
		calls := len(rcptCheck.called())
		d := addRcpt(s, tx, st.rcpt)
		if got := replyText(d); got != st.want || d.Stage != st.stage || d.Policy != st.policy {
			t.Errorf("%s: %q by %q under %q, want %q by %q under %q", st.rcpt, got, d.Stage, d.Policy, st.want, st.stage, st.policy)
		}
		ran := len(rcptCheck.called()) > calls
		if split := st.stage == "policy.split"; ran == split {
			t.Errorf("%s: rcpt stage ran: %v", st.rcpt, ran)
		}
		if st.stage == "policy.split" && (len(d.Trace) != 1 || d.Trace[0].Kind != "policy" || d.Trace[0].Result != p.pol.For(st.rcpt).Name) {
			t.Errorf("%s: trace %+v, want the policy.split pseudo-stage", st.rcpt, d.Trace)
		}
	}
	if want := []string{"user@example.test", "other@example.test"}; !slices.Equal(tx.Rcpts, want) {
		t.Errorf("recipients %q, want %q", tx.Rcpts, want)
	}

	// The next transaction starts afresh: the deferred recipient is taken.
	s2 := p.Begin().Fork()
	if d := addRcpt(s2, newTx(), "legal@example.test"); d.Action != stages.Continue || d.Policy != "legal" {
		t.Errorf("legal@ in a transaction of its own: %s under %q", d.Action, d.Policy)
	}
}

// Once a session is accepted, no stage and no threshold applies, so its
// recipients need not share a policy.
func TestAcceptedSessionIsNotSplit(t *testing.T) {
	pol := overridden()
	pol.Allow.ClientIPs = []string{"10.0.0.0/8"}
	s := newPipeline(t, pol).Begin()
	tx := newTx()
	tx.Client.Addr = netip.MustParseAddr("10.1.2.3")
	tx.Rcpts = nil
	s.Run(context.Background(), stages.Connect, tx, nil)
	s = s.Fork()
	for _, r := range []string{"user@example.test", "legal@example.test"} {
		if d := addRcpt(s, tx, r); d.Action != stages.Accept {
			t.Errorf("%s: %s, want accept", r, d.Action)
		}
	}
}

func TestLists(t *testing.T) {
	pol := defaultPolicy
	pol.Allow = policy.List{
		ClientIPs: []string{"192.0.2.0/24", "2001:db8::1"},
		Helos:     []string{"*.partner.example"},
		Senders:   []string{"boss@example.org", "@friends.example"},
		Rcpts:     []string{"postmaster@example.test"},
	}
	pol.Block = policy.List{
		ClientIPs: []string{"198.51.100.7"},
		Helos:     []string{"[203.0.113.1]", "localhost"},
		Senders:   []string{"*.spam.example", "mallory@example.org"},
		Rcpts:     []string{"spamtrap@example.test"},
	}
	base := func() *stages.Transaction {
		tx := newTx()
		tx.Client = stages.Client{Addr: netip.MustParseAddr("203.0.113.50"), Helo: "mail.example.org"}
		tx.Rcpts = nil
		return tx
	}
	for _, c := range []struct {
		name  string
		ph    stages.Phase
		set   func(*stages.Transaction)
		want  stages.Action
		stage string
		key   string
	}{
		{"client allowed", stages.Connect, func(tx *stages.Transaction) { tx.Client.Addr = netip.MustParseAddr("192.0.2.9") }, stages.Accept, "policy.allow", "client_ips"},
		{"client allowed v6", stages.Connect, func(tx *stages.Transaction) { tx.Client.Addr = netip.MustParseAddr("2001:db8::1") }, stages.Accept, "policy.allow", "client_ips"},
		{"client allowed v4-mapped", stages.Connect, func(tx *stages.Transaction) { tx.Client.Addr = netip.MustParseAddr("::ffff:192.0.2.9") }, stages.Accept, "policy.allow", "client_ips"},
		{"client blocked", stages.Connect, func(tx *stages.Transaction) { tx.Client.Addr = netip.MustParseAddr("198.51.100.7") }, stages.Reject, "policy.block", "client_ips"},
		{"client neither", stages.Connect, func(*stages.Transaction) {}, stages.Continue, "", ""},
		{"helo allowed", stages.Helo, func(tx *stages.Transaction) { tx.Client.Helo = "MX1.Partner.Example." }, stages.Accept, "policy.allow", "helos"},
		{"helo wildcard is for subdomains", stages.Helo, func(tx *stages.Transaction) { tx.Client.Helo = "partner.example" }, stages.Continue, "", ""},
		{"helo blocked literal", stages.Helo, func(tx *stages.Transaction) { tx.Client.Helo = "[203.0.113.1]" }, stages.Reject, "policy.block", "helos"},
		{"sender allowed", stages.Mail, func(tx *stages.Transaction) { tx.From = "Boss@Example.ORG" }, stages.Accept, "policy.allow", "senders"},
		{"sender domain allowed", stages.Mail, func(tx *stages.Transaction) { tx.From = "anyone@friends.example" }, stages.Accept, "policy.allow", "senders"},
		{"sender subdomain blocked", stages.Mail, func(tx *stages.Transaction) { tx.From = "x@a.spam.example" }, stages.Reject, "policy.block", "senders"},
		{"null sender", stages.Mail, func(tx *stages.Transaction) { tx.From = "" }, stages.Continue, "", ""},
		{"rcpt allowed", stages.Rcpt, func(tx *stages.Transaction) { tx.Rcpts = []string{"postmaster@example.test"} }, stages.Accept, "policy.allow", "rcpts"},
		{"rcpt blocked", stages.Rcpt, func(tx *stages.Transaction) { tx.Rcpts = []string{"user@example.test", "spamtrap@example.test"} }, stages.Reject, "policy.block", "rcpts"},
		{"only the last rcpt counts", stages.Rcpt, func(tx *stages.Transaction) { tx.Rcpts = []string{"spamtrap@example.test", "user@example.test"} }, stages.Continue, "", ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			var buf bytes.Buffer
			log := slog.New(slog.NewJSONHandler(&buf, nil))
			st := counting("check", stages.Verdict{})
			tx := base()
			c.set(tx)
			d := newPipeline(t, pol, st).Begin().Run(context.Background(), c.ph, tx, log)
			if d.Action != c.want || d.Stage != c.stage {
				t.Fatalf("got %s by %q (%s), want %s by %q", d.Action, d.Stage, d.Reason, c.want, c.stage)
			}
			if c.stage == "" {
				if len(st.called()) != 1 {
					t.Errorf("the phase's stage was called %d times, want once", len(st.called()))
				}
				return
			}
			if len(st.called()) != 0 {
				t.Errorf("the phase's stage ran after a list entry matched")
			}
			if len(d.Trace) != 1 || d.Trace[0].Name != c.stage || d.Trace[0].Kind != "policy" || d.Trace[0].Result != c.key || d.Trace[0].Action != c.want {
				t.Errorf("trace %+v, want one %s result for %s", d.Trace, c.stage, c.key)
			}
			wantReply := ""
			if c.want == stages.Reject {
				wantReply = "550 5.7.1 Message rejected"
			}
			if got := replyText(d); got != wantReply {
				t.Errorf("reply %q, want %q", got, wantReply)
			}
			var line map[string]any
			if err := json.Unmarshal(buf.Bytes(), &line); err != nil {
				t.Fatalf("log %q: %v", buf.String(), err)
			}
			if line["msg"] != "policy list" || line["list"] != c.stage || line["key"] != c.key || line["action"] != c.want.String() {
				t.Errorf("log line %v", line)
			}
		})
	}
}

// An allow entry at connect, helo or mail holds for the rest of the
// session: no stage runs after it. One at rcpt accepts that recipient only.
func TestAllowShortCircuits(t *testing.T) {
	pol := defaultPolicy
	pol.Allow = policy.List{ClientIPs: []string{"192.0.2.1"}, Rcpts: []string{"postmaster@example.test"}}
	ctx := context.Background()

	st := counting("spam", stages.Verdict{Action: stages.Reject})
	s := newPipeline(t, pol, st).Begin()
	tx := newTx()
	tx.Client.Addr = netip.MustParseAddr("192.0.2.1")
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail, stages.Rcpt, stages.Data} {
		if d := s.Run(ctx, ph, tx, nil); d.Action != stages.Accept || d.Stage != "policy.allow" {
			t.Errorf("%s: %s by %q, want accept by policy.allow", ph, d.Action, d.Stage)
		}
	}
	if n := len(st.called()); n != 0 {
		t.Errorf("a stage was called %d times in an allowed session", n)
	}

	st = counting("spam", stages.Verdict{Action: stages.Reject})
	s = newPipeline(t, pol, st).Begin()
	tx = newTx()
	tx.Rcpts = []string{"postmaster@example.test"}
	if d := s.Run(ctx, stages.Rcpt, tx, nil); d.Action != stages.Accept {
		t.Errorf("rcpt: %s, want accept", d.Action)
	}
	if d := s.Run(ctx, stages.Data, tx, nil); d.Action != stages.Reject || !slices.Equal(st.called(), []stages.Phase{stages.Data}) {
		t.Errorf("data: %s, calls %v; want the data stage to run and reject", d.Action, st.called())
	}
}

// A block entry wins over an allow entry, in the same phase and after one.
func TestBlockWinsOverAllow(t *testing.T) {
	pol := defaultPolicy
	pol.Allow = policy.List{ClientIPs: []string{"192.0.2.0/24"}, Senders: []string{"example.org"}}
	pol.Block = policy.List{Senders: []string{"mallory@example.org"}}
	s := newPipeline(t, pol).Begin()
	tx := newTx()
	tx.Client.Addr = netip.MustParseAddr("192.0.2.1")
	if d := s.Run(context.Background(), stages.Connect, tx, nil); d.Action != stages.Accept {
		t.Fatalf("connect: %s, want accept", d.Action)
	}
	tx.From = "mallory@example.org"
	d := s.Fork().Run(context.Background(), stages.Mail, tx, nil)
	if d.Action != stages.Reject || d.Stage != "policy.block" || d.Reason != `policy.block.senders entry "mallory@example.org" matches mallory@example.org` {
		t.Errorf("mail: %s by %q (%s), want reject by policy.block", d.Action, d.Stage, d.Reason)
	}
}

func TestStageResultMapping(t *testing.T) {
	for _, c := range []struct {
		name   string
		v      stages.Verdict
		want   stages.Action
		mapped string
	}{
		{"fail rejected", stages.Verdict{Result: "fail"}, stages.Reject, "stage results: fail = reject"},
		{"softfail tagged", stages.Verdict{Result: "softfail", Action: stages.Quarantine}, stages.Tag, "stage results: softfail = tag"},
		{"pass unmapped", stages.Verdict{Result: "pass", Action: stages.Tag}, stages.Tag, ""},
		{"accept mapped away", stages.Verdict{Result: "whitelisted", Action: stages.Accept}, stages.Continue, "stage results: whitelisted = continue"},
	} {
		t.Run(c.name, func(t *testing.T) {
			spf := returns("spf", c.v)
			after := returns("after", stages.Verdict{})
			p := newPipelineSpecs(t, noThresholds, StageSpec{Stage: spf, Results: map[string]stages.Action{
				"fail": stages.Reject, "softfail": stages.Tag, "whitelisted": stages.Continue,
			}}, StageSpec{Stage: after})
			var logged strings.Builder
			d := p.Begin().Run(context.Background(), stages.Data, newTx(), slog.New(slog.NewTextHandler(&logged, nil)))
			if d.Action != c.want || d.Trace[0].Action != c.want {
				t.Errorf("got %s (trace %s), want %s", d.Action, d.Trace[0].Action, c.want)
			}
			// The stage's log line names the mapping that chose its action.
			if got := strings.Contains(logged.String(), "mapped="+strconv.Quote(c.mapped)); got != (c.mapped != "") {
				t.Errorf("log %q, want mapped=%q", logged.String(), c.mapped)
			}
			if c.mapped != "" && c.want != stages.Continue && !strings.Contains(d.Reason, c.mapped) {
				t.Errorf("reason %q does not say which mapping decided", d.Reason)
			}
			if len(d.Trace) != 2 {
				t.Errorf("trace %v: the stage after a mapped-away accept must run", names(d.Trace))
			}
		})
	}
}

// A stage replies for a result as its own action would; a mapping to the
// other class of refusal keeps its text and enhanced subject and detail,
// with the class of the action taken. Unmapped, a reply of the wrong class
// is still refused for the default.
func TestMappedReplyTakesTheClassOfTheAction(t *testing.T) {
	spfFail := &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 23}, Text: "SPF fail: not permitted"}
	for _, c := range []struct {
		name    string
		v       stages.Verdict
		results map[string]stages.Action
		want    string
	}{
		{"mapped to reject", stages.Verdict{Result: "fail", Reply: spfFail}, map[string]stages.Action{"fail": stages.Reject}, "550 5.7.23 SPF fail: not permitted"},
		{"mapped to tempfail", stages.Verdict{Result: "fail", Reply: spfFail}, map[string]stages.Action{"fail": stages.TempFail}, "451 4.7.23 SPF fail: not permitted"},
		{"tempfail mapped to reject", stages.Verdict{Result: "temperror", Action: stages.TempFail, Reply: &stages.Reply{Code: 451, Enhanced: [3]int{4, 7, 24}, Text: "SPF temperror"}},
			map[string]stages.Action{"temperror": stages.Reject}, "550 5.7.24 SPF temperror"},
		{"no enhanced code", stages.Verdict{Result: "fail", Reply: &stages.Reply{Code: 554, Text: "No"}}, map[string]stages.Action{"fail": stages.TempFail}, "451 4.0.0 No"},
		{"unmapped, wrong class", stages.Verdict{Result: "fail", Action: stages.TempFail, Reply: spfFail}, nil, "451 4.7.1 Try again later"},
		{"mapped, not a refusal", stages.Verdict{Result: "fail", Reply: &stages.Reply{Code: 250, Text: "OK"}}, map[string]stages.Action{"fail": stages.Reject}, "550 5.7.1 Message rejected"},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := newPipelineSpecs(t, noThresholds, StageSpec{Stage: returns("spf", c.v), Results: c.results})
			d := p.Begin().Run(context.Background(), stages.Data, newTx(), nil)
			if d.Reply == nil || d.Reply.String() != c.want {
				t.Errorf("reply %v, want %s", d.Reply, c.want)
			}
		})
	}
}

// An override's results apply to the whole transaction: to the stages of
// the phases after its recipient, and to those that ran before it.
func TestOverrideResultMapping(t *testing.T) {
	build := func(spfSoftfail string) *Pipeline {
		pol := defaultPolicy
		pol.Overrides = []policy.Override{{Name: "legal", Rcpts: []string{"legal@example.test"}, Results: map[string]map[string]string{
			"spf":  {"softfail": spfSoftfail},
			"spam": {"suspect": "quarantine"},
		}}}
		spf := &fake{name: "spf", info: stages.Info{Kind: "spf", Phases: stages.Mail},
			run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
				return stages.Verdict{Result: "softfail", Reason: "not permitted"}, nil
			}}
		spam := returns("spam", stages.Verdict{Result: "suspect"})
		return newPipelineSpecs(t, pol, StageSpec{Stage: spf, Results: map[string]stages.Action{"softfail": stages.Tag}}, StageSpec{Stage: spam})
	}
	ctx := context.Background()

	s := build("reject").Begin().Fork()
	tx := newTx()
	tx.Rcpts = nil
	if d := s.Run(ctx, stages.Mail, tx, nil); d.Action != stages.Tag {
		t.Fatalf("mail: %s, want tag from the stage's own mapping", d.Action)
	}
	d := addRcpt(s, tx, "legal@example.test")
	if d.Action != stages.Reject || d.Stage != "spf" || d.Reason != "not permitted; policy legal results: spf.softfail = reject" {
		t.Errorf("rcpt legal@: %s by %q (%s), want reject by spf under legal's mapping", d.Action, d.Stage, d.Reason)
	}
	if d := addRcpt(s, tx, "user@example.test"); d.Action != stages.Tag {
		t.Errorf("rcpt user@: %s, want tag", d.Action)
	}
	if d := s.Run(ctx, stages.Data, tx, nil); d.Action != stages.Tag {
		t.Errorf("data for user@: %s, want tag: spam's suspect is mapped for legal only", d.Action)
	}

	s = build("continue").Begin().Fork()
	tx = newTx()
	tx.Rcpts = nil
	s.Run(ctx, stages.Mail, tx, nil)
	addRcpt(s, tx, "legal@example.test")
	d = s.Run(ctx, stages.Data, tx, nil)
	if d.Action != stages.Quarantine || d.Stage != "spam" || !strings.Contains(d.Reason, "policy legal results: spam.suspect = quarantine") {
		t.Errorf("data for legal@: %s by %q, trace %+v; want quarantine by spam's override mapping", d.Action, d.Stage, d.Trace)
	}
	if got := tx.Header.Get("Subject"); got != "hello" {
		t.Errorf("subject %q: spf's tag was mapped away for legal@, nothing tags it", got)
	}
}

// Before any recipient is known, a score is judged by the most lenient
// reject_score, then each recipient by its own policy.
func TestScoreBeforeRecipientsUsesMostLenientReject(t *testing.T) {
	dnsbl := &fake{name: "dnsbl", info: stages.Info{Kind: "dnsbl", Phases: stages.Connect},
		run: func(context.Context, stages.Phase, *stages.Transaction) (stages.Verdict, error) {
			return stages.Verdict{Score: 20, Result: "listed"}, nil
		}}
	p := newPipeline(t, overridden(), dnsbl)
	base := p.Begin()
	if d := base.Run(context.Background(), stages.Connect, newTx(), nil); d.Action == stages.Reject {
		t.Fatalf("connect: rejected by %q (%s) before the recipients are known", d.Stage, d.Reason)
	}
	s := base.Fork()
	tx := newTx()
	tx.Rcpts = nil
	d := addRcpt(s, tx, "user@example.test")
	if d.Action != stages.Reject || d.Stage != "dnsbl" ||
		d.Reason != "score 20 reached reject_score 15 of policy default; scored by dnsbl 20 (listed)" {
		t.Errorf("user@: %s (%s), want reject by the default reject_score", d.Action, d.Reason)
	}
	if d := addRcpt(s, tx, "team@marketing.example.test"); d.Action != stages.Quarantine {
		t.Errorf("marketing: %s (%s), want quarantine (20 reaches quarantine_score 20, below reject_score 30)", d.Action, d.Reason)
	}
}
