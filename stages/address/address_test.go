package address

import (
	"errors"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	for _, c := range []struct {
		in, local, domain string
		ok                bool
	}{
		{"a@b.test", "a", "b.test", true},
		{"x@evil.test@dest.test", "x@evil.test", "dest.test", true}, // the LAST "@"
		{"@b.test", "", "b.test", true},
		{"a@", "a", "", true},
		{"postmaster", "postmaster", "", false},
		{"", "", "", false},
	} {
		l, d, ok := Split(c.in)
		if l != c.local || d != c.domain || ok != c.ok {
			t.Errorf("Split(%q) = %q, %q, %v; want %q, %q, %v", c.in, l, d, ok, c.local, c.domain, c.ok)
		}
	}
}

func TestDomain(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"example.test", "example.test"},
		{"Example.TEST", "example.test"},
		{"example.test.", "example.test"}, // the root dot
		{"EXAMPLE.test.", "example.test"},
		{"localhost", "localhost"},
		{"r3---sn-x.example", "r3---sn-x.example"}, // LDH, though IDNA's hyphen rule refuses it
		{"1.2.3.example", "1.2.3.example"},
		{"bücher.test", "xn--bcher-kva.test"},
		{"BÜCHER.test.", "xn--bcher-kva.test"},
		{"xn--bcher-kva.test", "xn--bcher-kva.test"},
		{"XN--BCHER-KVA.test", "xn--bcher-kva.test"},
		{"straße.de", "xn--strae-oqa.de"}, // IDNA2008, not transitional
		{"[192.0.2.1]", "[192.0.2.1]"},
		{"[IPv6:2001:DB8::1]", "[IPv6:2001:db8::1]"},
		{"[ipv6:2001:db8:0:0::1]", "[IPv6:2001:db8::1]"},
		{strings.Repeat("a.", 126) + "a", strings.Repeat("a.", 126) + "a"}, // 253 octets
	} {
		got, err := Domain(c.in)
		if err != nil || got != c.want {
			t.Errorf("Domain(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
		if again, err := Domain(got); err != nil || again != got {
			t.Errorf("Domain(%q) = %q, %v; canonical forms must stay as they are", got, again, err)
		}
	}
	for _, in := range []string{
		"", ".", "example.test..", ".example.test", "a..b", "-a.test", "a-.test", "bad_domain.test",
		"bü_cher.test", "a\u2488.test", "exa mple.test", strings.Repeat("a", 64) + ".test",
		strings.Repeat("a.", 127) + "a", // 255 octets
		"[192.0.2.1", "[999.0.2.1]", "[2001:db8::1]", "[IPv6:192.0.2.1]", "[IPv6:fe80::1%eth0]", "[x]",
	} {
		if got, err := Domain(in); !errors.Is(err, ErrDomain) {
			t.Errorf("Domain(%q) = %q, %v; want ErrDomain", in, got, err)
		}
	}
}

func TestParse(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"ceo@example.test.", "ceo@example.test"},
		{"CEO@Example.Test", "CEO@example.test"}, // the local part as written
		{"ü@bücher.test", "ü@xn--bcher-kva.test"},
		{"x@evil.test@dest.test.", "x@evil.test@dest.test"},
		{"a@[IPv6:2001:DB8::1]", "a@[IPv6:2001:db8::1]"},
	} {
		if got, err := Parse(c.in); err != nil || got != c.want {
			t.Errorf("Parse(%q) = %q, %v; want %q", c.in, got, err, c.want)
		}
	}
	for in, want := range map[string]error{
		"":                 ErrNoDomain,
		"postmaster":       ErrNoDomain,
		"@example.test":    ErrNoDomain,
		"a@":               ErrNoDomain,
		"a@bad_domain.tst": ErrDomain,
		"a@b@":             ErrNoDomain,
	} {
		if got, err := Parse(in); !errors.Is(err, want) {
			t.Errorf("Parse(%q) = %q, %v; want %v", in, got, err, want)
		}
	}
}

func TestDomainOf(t *testing.T) {
	for in, want := range map[string]string{
		"a@Example.TEST.":   "example.test",
		"a@bücher.test":     "xn--bcher-kva.test",
		"a@b@c.test":        "c.test",
		`"x@y"@host.test.`:  "host.test",
		"a@[192.0.2.1]":     "[192.0.2.1]",
		"":                  "",
		"postmaster":        "",
		"a@bad_domain.test": "",
	} {
		if got := DomainOf(in); got != want {
			t.Errorf("DomainOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestFold(t *testing.T) {
	for in, want := range map[string]string{
		"Example.TEST.":  "example.test",
		"*.BÜCHER.test.": "*.xn--bcher-kva.test",
		"*":              "*",
		"Bad_Domain.":    "bad_domain",
		"xn--bcher-kva":  "xn--bcher-kva",
	} {
		if got := Fold(in); got != want {
			t.Errorf("Fold(%q) = %q, want %q", in, got, want)
		}
		if got := Fold(want); got != want {
			t.Errorf("Fold(%q) = %q; Fold must be idempotent", want, got)
		}
	}
}

func TestPatternAndMatch(t *testing.T) {
	for in, want := range map[string]string{
		"Example.test.":  "example.test",
		"*.BÜCHER.test":  "*.xn--bcher-kva.test",
		"*.example.test": "*.example.test",
	} {
		if got, err := Pattern(in); err != nil || got != want {
			t.Errorf("Pattern(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"*", "*.", "**.example.test", "*.[192.0.2.1]", "[192.0.2.1]", "a.*.test", "x_y.test"} {
		if got, err := Pattern(in); err == nil {
			t.Errorf("Pattern(%q) = %q, want an error", in, got)
		}
	}
	for _, c := range []struct {
		p, d string
		ok   bool
	}{
		{"example.test", "example.test", true},
		{"example.test", "sub.example.test", false},
		{"*.example.test", "sub.example.test", true},
		{"*.example.test", "a.b.example.test", true},
		{"*.example.test", "example.test", false}, // subdomains, not the name itself
		{"*.example.test", "badexample.test", false},
		{"*", "example.test", false},
	} {
		if got := Match(c.p, c.d); got != c.ok {
			t.Errorf("Match(%q, %q) = %v, want %v", c.p, c.d, got, c.ok)
		}
	}
}

func TestEqual(t *testing.T) {
	for _, c := range []struct {
		a, b string
		ok   bool
	}{
		{"boss@example.test", "BOSS@Example.Test.", true},
		{"ü@bücher.test", "ü@xn--bcher-kva.test", true},
		{"boss@example.test", "boss@example.org", false},
		{"boss@example.test", "bos@example.test", false},
		{"postmaster", "Postmaster", true},
		{"postmaster", "postmaster@example.test", false},
		// Only ASCII is folded in a local part (see Key).
		{"ü@example.test", "Ü@example.test", false},
		{"\u017fam@example.test", "sam@example.test", false},   // ſ: Unicode folds it to s
		{"\u0130sam@example.test", "isam@example.test", false}, // İ: strings.ToLower makes it i
		{"\u0130sam@example.test", "\u0130SAM@Example.test", true},
		{"\u212aelvin@example.test", "kelvin@example.test", false}, // the Kelvin sign folds to k
	} {
		if got := Equal(c.a, c.b); got != c.ok {
			t.Errorf("Equal(%q, %q) = %v, want %v", c.a, c.b, got, c.ok)
		}
		// Equal and Key are one rule: what is the same mailbox has the
		// same key in every store.
		if same := Key(c.a) == Key(c.b); same != c.ok {
			t.Errorf("Key(%q) = %q, Key(%q) = %q; same = %v, want %v", c.a, Key(c.a), c.b, Key(c.b), same, c.ok)
		}
	}
	if got := Key("\u0130Sam@BÜCHER.test."); got != "\u0130sam@xn--bcher-kva.test" {
		t.Errorf("Key = %q", got)
	}
	if got := Key("A\xffB@x.test"); got != "a\xffb@x.test" {
		t.Errorf("Key of invalid UTF-8 = %q: bytes other than ASCII letters must stay", got)
	}
}

func TestIsHostname(t *testing.T) {
	for in, want := range map[string]bool{
		"mx.example.test":    true,
		"MX.Example.Test":    true,
		"localhost":          true,
		"xn--bcher-kva.test": true,
		"mx.example.test.":   false, // root dot: Domain strips it, a host name has none
		"bücher.test":        false,
		"a_b.test":           false,
		"":                   false,
	} {
		if got := IsHostname(in); got != want {
			t.Errorf("IsHostname(%q) = %v, want %v", in, got, want)
		}
	}
}

func FuzzDomain(f *testing.F) {
	for _, s := range []string{"example.test.", "BÜCHER.test", "[IPv6:::1]", "a..b", "*.x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := Domain(s)
		if err != nil {
			return
		}
		// The canonical form is a fixed point, and ASCII.
		if again, err := Domain(d); err != nil || again != d {
			t.Fatalf("Domain(%q) = %q; Domain(%q) = %q, %v", s, d, d, again, err)
		}
		if !IsASCII(d) || strings.HasSuffix(d, ".") {
			t.Fatalf("Domain(%q) = %q: not ASCII or with root dot", s, d)
		}
		if Fold(s) != d {
			t.Fatalf("Fold(%q) = %q, Domain gives %q", s, Fold(s), d)
		}
	})
}

func TestIdentity(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Alice@Sender.TEST.", "alice@sender.test"},
		{"prvs=0123abcdef=alice@sender.test", "alice@sender.test"}, // BATV
		{"PRVS=0123ABCDEF=Alice@sender.test", "alice@sender.test"},
		{"prvs=x@sender.test", "prvs=x@sender.test"}, // no tag after all
		{"ü@BÜCHER.test", "ü@xn--bcher-kva.test"},
		{"Postmaster", "postmaster"},
	} {
		if got := Identity(c.in); got != c.want {
			t.Errorf("Identity(%q) = %q; want %q", c.in, got, c.want)
		}
	}
}

// TestHasControlOrSpace: the one rule the SMTP side and the stages' edits
// refuse an envelope address by.
func TestHasControlOrSpace(t *testing.T) {
	for addr, want := range map[string]bool{
		"a@example.test":       false,
		"ü@bücher.test":        false,
		"a b@example.test":     true,
		"a\t@example.test":     true,
		"a@example.test\r\n":   true,
		"a\x00@example.test":   true,
		"a\x7f@example.test":   true,
		"\"quoted\"@x.example": false,
	} {
		if got := HasControlOrSpace(addr); got != want {
			t.Errorf("HasControlOrSpace(%q) = %v, want %v", addr, got, want)
		}
	}
}
