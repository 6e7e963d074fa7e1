package policy

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/spam"
	"github.com/mailgate/mailgate/stages/spf"
)

func TestPolicyConfig(t *testing.T) {
	c, err := Load("testdata/policy.toml")
	if err != nil {
		t.Fatal(err)
	}
	p := &c.Policy
	if want := map[string]stages.Action{"fail": stages.Reject, "softfail": stages.Tag}; !reflect.DeepEqual(c.Stages[0].ResultActions(), want) {
		t.Errorf("stage[0] results %v, want %v", c.Stages[0].ResultActions(), want)
	}
	if c.Stages[1].ResultActions() != nil {
		t.Errorf("stage[1] without results: %v", c.Stages[1].ResultActions())
	}

	spamFlag := stages.Field{Name: "X-Spam-Flag", Value: "YES"}
	tests := []struct {
		rcpt string
		want Effective
	}{
		{"user@example.test", Effective{Name: "default", TagScore: 5, QuarantineScore: 10, RejectScore: 15,
			SubjectTag: "[SPAM]", TagHeaders: []stages.Field{spamFlag}}},
		{"LEGAL@example.TEST", Effective{Name: "legal", TagScore: 3, QuarantineScore: 6, RejectScore: 8,
			SubjectTag: "[SUSPECT]", TagHeaders: []stages.Field{spamFlag, {Name: "X-Policy", Value: "strict"}},
			results: p.Overrides[0].Results}},
		{"counsel@example.test", Effective{Name: "legal", TagScore: 3, QuarantineScore: 6, RejectScore: 8,
			SubjectTag: "[SUSPECT]", TagHeaders: []stages.Field{spamFlag, {Name: "X-Policy", Value: "strict"}},
			results: p.Overrides[0].Results}},
		{"news@Marketing.Example.Test.", Effective{Name: "marketing", TagScore: 5, QuarantineScore: 25, RejectScore: 30,
			SubjectTag: "", TagHeaders: []stages.Field{spamFlag}}},
		{"dev@a.lab.example.test", Effective{Name: "*.lab.example.test", TagScore: 5, QuarantineScore: 10, RejectScore: 15,
			SubjectTag: "[SPAM]"}},
		{"dev@lab.example.test", Effective{Name: "default", TagScore: 5, QuarantineScore: 10, RejectScore: 15,
			SubjectTag: "[SPAM]", TagHeaders: []stages.Field{spamFlag}}},
	}
	for _, tt := range tests {
		if got := p.For(tt.rcpt); !reflect.DeepEqual(got, tt.want) {
			t.Errorf("For(%q) =\n%+v, want\n%+v", tt.rcpt, got, tt.want)
		}
	}
	legal := p.For("legal@example.test")
	for _, c := range []struct {
		stage, result string
		want          stages.Action
		ok            bool
	}{
		{"spf", "softfail", stages.Reject, true},
		{"spam", "spam", stages.Quarantine, true},
		{"spf", "fail", 0, false}, // the stage's own mapping is the pipeline's
		{"spf", "", 0, false},
	} {
		if a, ok := legal.Result(c.stage, c.result); a != c.want || ok != c.ok {
			t.Errorf("legal.Result(%s, %s) = %s, %v; want %s, %v", c.stage, c.result, a, ok, c.want, c.ok)
		}
	}
	if !SamePolicy(legal, p.For("counsel@example.test")) || SamePolicy(legal, p.For("user@example.test")) {
		t.Error("SamePolicy does not tell legal from default")
	}
	if got := len(p.All()); got != 4 {
		t.Errorf("All() has %d policies, want 4", got)
	}
}

// A config written back as TOML loads into the same policy.
func TestPolicyRoundTrip(t *testing.T) {
	c, err := Load("testdata/policy.toml")
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	buf.WriteString("hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[[stage]]\nname = \"spf\"\nkind = \"spf\"\n[[stage]]\nname = \"spam\"\nkind = \"spam\"\n")
	if err := toml.NewEncoder(&buf).Encode(struct {
		Policy Policy `toml:"policy"`
	}{c.Policy}); err != nil {
		t.Fatal(err)
	}
	again, err := Parse("again.toml", buf.Bytes())
	if err != nil {
		t.Fatalf("%v\n%s", err, buf.String())
	}
	if !reflect.DeepEqual(again.Policy, c.Policy) {
		t.Errorf("round trip changed the policy:\n%+v\nwant\n%+v\n%s", again.Policy, c.Policy, buf.String())
	}
}

func TestSubjectTagOff(t *testing.T) {
	c, err := Parse("p.toml", []byte("hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[policy]\nsubject_tag = \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Policy.SubjectTag != "" {
		t.Errorf("subject_tag = %q, want it off", c.Policy.SubjectTag)
	}
}

// An address wins over its domain, an exact domain over a wildcard, a
// longer wildcard over a shorter one, whatever their order in the file.
func TestOverridePrecedence(t *testing.T) {
	p := Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15, Overrides: []Override{
		{Name: "wide", Domains: []string{"*.example.test"}},
		{Name: "narrow", Domains: []string{"*.eu.example.test"}},
		{Name: "domain", Domains: []string{"sales.eu.example.test", "example.test"}},
		{Name: "mailbox", Rcpts: []string{"boss@sales.eu.example.test"}},
	}}
	for rcpt, want := range map[string]string{
		"boss@sales.eu.example.test":  "mailbox",
		"BOSS@SALES.EU.EXAMPLE.TEST":  "mailbox",
		"clerk@sales.eu.example.test": "domain",
		"x@paris.eu.example.test":     "narrow",
		"x@us.example.test":           "wide",
		"x@example.test":              "domain",
		"x@example.org":               "default",
		"no-domain":                   "default",
		"":                            "default",
	} {
		if got := p.For(rcpt).Name; got != want {
			t.Errorf("For(%q) = %q, want %q", rcpt, got, want)
		}
	}
}

func TestListMatch(t *testing.T) {
	l := List{
		ClientIPs: []string{"192.0.2.0/24", "2001:db8::/32", "198.51.100.7", "::ffff:203.0.113.0/120"},
		Helos:     []string{"mail.example.org", "*.example.net", "[192.0.2.1]"},
		Senders:   []string{"Boss@Example.org", "@partner.example", "friend.example", "*.trusted.example"},
		Rcpts:     []string{"postmaster@example.test"},
	}
	tx := func(f func(*stages.Transaction)) *stages.Transaction {
		t := &stages.Transaction{}
		f(t)
		return t
	}
	addr := func(s string) func(*stages.Transaction) {
		return func(t *stages.Transaction) { t.Client.Addr = netip.MustParseAddr(s) }
	}
	helo := func(s string) func(*stages.Transaction) { return func(t *stages.Transaction) { t.Client.Helo = s } }
	from := func(s string) func(*stages.Transaction) { return func(t *stages.Transaction) { t.From = s } }
	for _, c := range []struct {
		ph    stages.Phase
		set   func(*stages.Transaction)
		entry string
	}{
		{stages.Connect, addr("192.0.2.200"), "192.0.2.0/24"},
		{stages.Connect, addr("::ffff:192.0.2.200"), "192.0.2.0/24"},
		{stages.Connect, addr("2001:db8:1::5"), "2001:db8::/32"},
		{stages.Connect, addr("198.51.100.7"), "198.51.100.7"},
		{stages.Connect, addr("198.51.100.8"), ""},
		{stages.Connect, addr("203.0.113.9"), "::ffff:203.0.113.0/120"},
		{stages.Connect, func(*stages.Transaction) {}, ""},
		{stages.Helo, helo("Mail.Example.ORG"), "mail.example.org"},
		{stages.Helo, helo("mx.example.net."), "*.example.net"},
		{stages.Helo, helo("example.net"), ""},
		{stages.Helo, helo("[192.0.2.1]"), "[192.0.2.1]"},
		{stages.Mail, from("boss@example.org"), "Boss@Example.org"},
		{stages.Mail, from("other@example.org"), ""},
		{stages.Mail, from("a@Partner.Example"), "@partner.example"},
		{stages.Mail, from("a@friend.example"), "friend.example"},
		{stages.Mail, from("a@sub.friend.example"), ""},
		{stages.Mail, from("a@x.trusted.example"), "*.trusted.example"},
		{stages.Mail, from("a@trusted.example"), ""},
		{stages.Mail, from(""), ""},
		{stages.Rcpt, func(t *stages.Transaction) { t.Rcpts = []string{"x@example.test", "Postmaster@example.test"} }, "postmaster@example.test"},
		{stages.Rcpt, func(t *stages.Transaction) { t.Rcpts = []string{"postmaster@example.test", "x@example.test"} }, ""},
		{stages.Data, func(t *stages.Transaction) { t.Rcpts = []string{"postmaster@example.test"} }, ""},
	} {
		x := tx(c.set)
		hit, ok := l.Match(c.ph, x)
		if ok != (c.entry != "") || hit.Entry != c.entry {
			t.Errorf("%s %+v: hit %+v (%v), want entry %q", c.ph, x, hit, ok, c.entry)
		}
	}
}

func TestCheck(t *testing.T) {
	// Zero thresholds are off, not an error, for a policy built in Go.
	if err := (&Policy{}).Check(); err != nil {
		t.Errorf("Check of the zero policy: %v", err)
	}
	p := Policy{Allow: List{Senders: []string{"not an address"}}, SubjectTag: "a\rb"}
	want := strings.Join([]string{
		`policy.subject_tag: unexpected "a\rb"; expect text without control characters such as "[SPAM]"`,
		`policy.allow.senders[0]: unexpected "not an address"; expect an address such as "user@example.org", a domain such as "example.org", or "*.example.org" for its subdomains`,
	}, "\n")
	if err := p.Check(); err == nil || err.Error() != want {
		t.Errorf("Check error:\n%v\nwant:\n%s", err, want)
	}
}

// TestREADME loads every TOML example of README.md, so that the
// documentation cannot drift from what the loader accepts, nor from the
// result words of the kinds it maps.
func TestREADME(t *testing.T) {
	kinds := map[string][]string{"spf": spf.Results(), "spam": spam.Results()}
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllStringSubmatch(string(data), -1)
	if len(blocks) < 5 {
		t.Fatalf("found %d TOML examples in README.md, want at least 5", len(blocks))
	}
	for i, b := range blocks {
		src := "hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n" + b[1]
		if !strings.Contains(src, "[[stage]]") {
			src += "[[stage]]\nname = \"spf\"\nkind = \"spf\"\n[[stage]]\nname = \"spam\"\nkind = \"spam\"\n"
		}
		c, err := Parse(fmt.Sprintf("README.md example %d", i+1), []byte(src))
		if err == nil {
			err = c.CheckKinds(kinds)
		}
		if err != nil {
			t.Errorf("example %d:\n%s\n%v", i+1, b[1], err)
		}
	}
}

// Loading puts every domain and address of lists, overrides, routes and
// bounce_from in the form the SMTP side gives envelope addresses, taking
// U-labels and a root dot; the local part stays as written.
func TestEntriesCanonicalAtLoad(t *testing.T) {
	c, err := Parse("c.toml", []byte(`hostname = "mx.example.test"
data_dir = "/d"
[delivery]
bounce_from = "Bounces@MX.Example.TEST."
[[route]]
domains = ["Bücher.test.", "*.EXAMPLE.test."]
mx = true
[policy.block]
helos = ["MX.Bücher.test.", "[IPv6:2001:DB8::1]", "[2001:DB8::1]"]
senders = ["Spammer@Bad.TEST.", "@BÜCHER.example", "*.Bücher.org."]
rcpts = ["CEO@Example.TEST."]
[[policy.override]]
rcpts = ["Legal@bücher.test"]
domains = ["*.Bücher.net."]
`))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name      string
		got, want []string
	}{
		{"delivery.bounce_from", []string{c.Delivery.BounceFrom}, []string{"Bounces@mx.example.test"}},
		{"route.domains", c.Routes[0].Domains, []string{"xn--bcher-kva.test", "*.example.test"}},
		{"policy.block.helos", c.Policy.Block.Helos, []string{"mx.xn--bcher-kva.test", "[IPv6:2001:db8::1]", "[2001:db8::1]"}},
		{"policy.block.senders", c.Policy.Block.Senders, []string{"Spammer@bad.test", "@xn--bcher-kva.example", "*.xn--bcher-kva.org"}},
		{"policy.block.rcpts", c.Policy.Block.Rcpts, []string{"CEO@example.test"}},
		{"policy.override.rcpts", c.Policy.Overrides[0].Rcpts, []string{"Legal@xn--bcher-kva.test"}},
		{"policy.override.domains", c.Policy.Overrides[0].Domains, []string{"*.xn--bcher-kva.net"}},
	} {
		if !slices.Equal(tc.got, tc.want) {
			t.Errorf("%s = %q, want %q", tc.name, tc.got, tc.want)
		}
	}
	if got := c.Policy.For("x@a.xn--bcher-kva.net").Name; got != "legal@xn--bcher-kva.test" {
		t.Errorf("the override's name is %q, want its first address in canonical form", got)
	}
}

// A Policy put together in Go matches as a loaded one does: its entries
// are folded as they are compared.
func TestSpellingsMatchInGo(t *testing.T) {
	p := Policy{Overrides: []Override{
		{Name: "legal", Rcpts: []string{"Legal@Example.TEST."}},
		{Name: "idn", Domains: []string{"*.Bücher.test"}},
	}}
	for rcpt, want := range map[string]string{
		"legal@example.test":        "legal",
		"legal@example.test.":       "legal",
		"x@shop.xn--bcher-kva.test": "idn",
		"x@shop.bücher.test.":       "idn",
		"x@xn--bcher-kva.test":      DefaultName,
	} {
		if got := p.For(rcpt).Name; got != want {
			t.Errorf("For(%q) = %q, want %q", rcpt, got, want)
		}
	}
	l := List{Senders: []string{"spammer@bad.test.", "xn--bcher-kva.test"}, Rcpts: []string{"@Bücher.example"}}
	for _, tc := range []struct {
		ph    stages.Phase
		tx    stages.Transaction
		entry string
	}{
		{stages.Mail, stages.Transaction{From: "spammer@bad.test"}, "spammer@bad.test."},
		{stages.Mail, stages.Transaction{From: "Spammer@BAD.test."}, "spammer@bad.test."},
		{stages.Mail, stages.Transaction{From: "a@bücher.test"}, "xn--bcher-kva.test"},
		{stages.Rcpt, stages.Transaction{Rcpts: []string{"a@xn--bcher-kva.example"}}, "@Bücher.example"},
		{stages.Rcpt, stages.Transaction{Rcpts: []string{"a@bücher.example."}}, "@Bücher.example"},
	} {
		hit, ok := l.Match(tc.ph, &tc.tx)
		if !ok || hit.Entry != tc.entry {
			t.Errorf("%s %+v: hit %+v (%v), want entry %q", tc.ph, tc.tx, hit, ok, tc.entry)
		}
	}
}
