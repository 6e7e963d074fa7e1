package authres

import (
	"fmt"
	"strings"
	"testing"
)

// show writes a field as the tests compare it: authserv-id, version, then
// each result as method/version=value, reason and props.
func show(f Field) string {
	parts := []string{fmt.Sprintf("%s v%d", f.AuthServID, f.Version)}
	for _, r := range f.Results {
		parts = append(parts, showResult(r))
	}
	return strings.Join(parts, "; ")
}

func showResult(r Result) string {
	s := fmt.Sprintf("%s/%d=%s", r.Method, r.MethodVersion, r.Value)
	if r.Reason != "" {
		s += fmt.Sprintf(" reason=%q", r.Reason)
	}
	for _, p := range r.Props {
		s += fmt.Sprintf(" %s=%q", p.Key, p.Value)
	}
	return s
}

// TestRFC8601Examples: every Authentication-Results field of RFC 8601
// Appendix B (B.1 has none), as the field's value.
func TestRFC8601Examples(t *testing.T) {
	for _, c := range []struct{ name, in, want string }{
		{"B.2", "example.org 1; none", "example.org v1"},
		{"B.3", "example.com;\r\n          spf=pass smtp.mailfrom=example.net",
			`example.com v1; spf/1=pass smtp.mailfrom="example.net"`},
		{"B.4 first", "example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\r\n          spf=pass smtp.mailfrom=example.net",
			`example.com v1; auth/1=pass smtp.auth="sender@example.net"; spf/1=pass smtp.mailfrom="example.net"`},
		{"B.4 second", "example.com; iprev=pass\r\n          policy.iprev=192.0.2.200",
			`example.com v1; iprev/1=pass policy.iprev="192.0.2.200"`},
		{"B.5 first", "example.com;\r\n          dkim=pass (good signature) header.d=example.com",
			`example.com v1; dkim/1=pass header.d="example.com"`},
		{"B.5 second", "example.com;\r\n          auth=pass (cram-md5) smtp.auth=sender@example.com;\r\n          spf=fail smtp.mailfrom=example.com",
			`example.com v1; auth/1=pass smtp.auth="sender@example.com"; spf/1=fail smtp.mailfrom="example.com"`},
		{"B.6 first", "example.com;\r\n      dkim=pass reason=\"good signature\"\r\n        header.i=@mail-router.example.net;\r\n      dkim=fail reason=\"bad signature\"\r\n        header.i=@newyork.example.com",
			`example.com v1; dkim/1=pass reason="good signature" header.i="@mail-router.example.net"; dkim/1=fail reason="bad signature" header.i="@newyork.example.com"`},
		{"B.6 second", "example.net;\r\n      dkim=pass (good signature) header.i=@newyork.example.com",
			`example.net v1; dkim/1=pass header.i="@newyork.example.com"`},
		{"B.7", "foo.example.net (foobar) 1 (baz);\r\n    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n      policy (A dot can go here) . (like that) expired\r\n      (this surprised me) = (as I wasn't expecting it) 1362471462",
			`foo.example.net v1; dkim/1=fail policy.expired="1362471462"`},
	} {
		f, err := ParseField(c.in)
		if got := show(f); err != nil || got != c.want {
			t.Errorf("%s: %s (%v)\nwant %s", c.name, got, err, c.want)
		}
	}
}

// TestParse: what the stages write, and what go-msgauth's reader got
// wrong or refused.
func TestParse(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		// The properties of the dkim stage's entries, header.s and header.b included.
		{"x; dkim=pass header.b=AbC/+d= header.d=example.com header.i=@example.com header.s=sel; dkim=fail reason=\"body hash did not verify\" header.d=example.net",
			`x v1; dkim/1=pass header.b="AbC/+d=" header.d="example.com" header.i="@example.com" header.s="sel"; dkim/1=fail reason="body hash did not verify" header.d="example.net"`},
		// oldest-pass=0 is a value like any other.
		{"x; arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1", `x v1; arc/1=pass header.oldest-pass="0" smtp.remote-ip="192.0.2.1"`},
		// A ";" and "=" in a quoted reason do not end it; escapes.
		{`x; spf=fail reason="a; b=c \"q\" \\" smtp.mailfrom=a.example`, `x v1; spf/1=fail reason="a; b=c \"q\" \\" smtp.mailfrom="a.example"`},
		// Quoted authserv-id, values and local-part; a version other than 1.
		{`"mx.example.org" 2; dkim=pass header.d="example.com" smtp.mailfrom="a b"@example.com`,
			`mx.example.org v2; dkim/1=pass header.d="example.com" smtp.mailfrom="a b@example.com"`},
		// Case, comments right after the id, a trailing ";", empty entries.
		{"MX.Example.ORG(c);DKIM=Pass Header.D=Example.COM;; spf=none;", `MX.Example.ORG v1; dkim/1=pass header.d="Example.COM"; spf/1=none`},
		{"x;\tnone\r\n (nothing)", "x v1"},
		{"(comment (nested) \\) x) mx.example.test;", "mx.example.test v1"},
		{"\r\n\tmx.example.test(c);", "mx.example.test v1"},
		{"x; dmarc=fail policy.dmarc=reject header.from=example.com", `x v1; dmarc/1=fail policy.dmarc="reject" header.from="example.com"`},
	} {
		f, err := ParseField(c.in)
		if got := show(f); err != nil || got != c.want {
			t.Errorf("%q:\n got %s (%v)\nwant %s", c.in, got, err, c.want)
		}
	}
}

// TestParseErrors: a field that does not parse gives an error, with the
// authserv-id and the entries before the bad one: the headers stage
// removes a forged field however badly it is written (RFC 8601 §5).
func TestParseErrors(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"", " v1"},
		{"x", "x v1"},
		{"x y; none", "x v1"},
		{"x (open; spf=pass", "x v1"},
		{"x; spf", "x v1"},
		{"x; spf=pass; dkim=pass header.d", `x v1; spf/1=pass`},
		{"x; spf=pass; dkim=pass foo=bar", `x v1; spf/1=pass`},
		{`x; spf=pass reason="open`, "x v1"},
		{"x; none; spf=pass", "x v1"},
		{"x; dkim/a=pass", "x v1"},
		{`"unterminated; none`, " v1"},
		{"(unterminated", " v1"},
	} {
		f, err := ParseField(c.in)
		if got := show(f); err == nil || got != c.want {
			t.Errorf("%q: %s, %v; want an error and %s", c.in, got, err, c.want)
		}
	}
}

// TestParseResults: a stage's reason, whose first entry has no ";".
func TestParseResults(t *testing.T) {
	rs, err := ParseResults("spf=pass smtp.mailfrom=example.org; spf=none (HELO) smtp.helo=mx.example.org")
	if err != nil || len(rs) != 2 || rs[0].Get("SMTP.MailFrom") != "example.org" || rs[1].Get("smtp.helo") != "mx.example.org" || rs[1].Get("smtp.mailfrom") != "" {
		t.Errorf("%+v, %v", rs, err)
	}
	if rs, err := ParseResults("dkim=none"); err != nil || len(rs) != 1 || rs[0].Method != "dkim" || rs[0].Value != "none" {
		t.Errorf("dkim=none: %+v, %v", rs, err)
	}
	if rs, err := ParseResults(""); err != nil || rs != nil {
		t.Errorf("empty: %+v, %v", rs, err)
	}
}

// FuzzParseField: any input gives a result or an error, never a panic,
// and never more results than ";" in it.
func FuzzParseField(f *testing.F) {
	f.Add("foo.example.net (foobar) 1 (baz);\r\n    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\r\n      policy (A dot can go here) . (like that) expired\r\n      (this surprised me) = (as I wasn't expecting it) 1362471462")
	f.Add(`"x" 1; spf=fail reason="a;b" smtp.mailfrom="a b"@c; none`)
	f.Fuzz(func(t *testing.T, s string) {
		fl, _ := ParseField(s)
		if len(fl.Results) > strings.Count(s, ";") {
			t.Fatalf("%d results from %q", len(fl.Results), s)
		}
		ParseResults(s)
	})
}

// TestUnknownMethods: methods and ptypes this package has never heard of
// are read like any other (RFC 8601 §2.7: new ones are registered), so
// they neither fail the field nor take the entries after them along; a
// reader picks the methods it knows.
func TestUnknownMethods(t *testing.T) {
	f, err := ParseField(`mx.example.org; x-vendor/2=maybe (score 3) vendor.score=3 body.hash="a;b"; vbr=pass header.md=example.net header.mv=dwl.example; spf=pass smtp.mailfrom=example.net`)
	want := `mx.example.org v1; x-vendor/2=maybe vendor.score="3" body.hash="a;b"; vbr/1=pass header.md="example.net" header.mv="dwl.example"; spf/1=pass smtp.mailfrom="example.net"`
	if got := show(f); err != nil || got != want {
		t.Fatalf("%s (%v)\nwant %s", got, err, want)
	}
	var spf []Result
	for _, r := range f.Results {
		if r.Method == "spf" {
			spf = append(spf, r)
		}
	}
	if len(spf) != 1 || spf[0].Get("smtp.mailfrom") != "example.net" || f.Results[0].Props[0].Type() != "vendor" {
		t.Errorf("spf entries %+v", spf)
	}
}

// TestFormat: what the stages write, and that each value reads back as it
// was given, less what a header field cannot carry.
func TestFormat(t *testing.T) {
	for _, c := range []struct {
		in   Result
		want string
	}{
		{Result{Method: "dkim", Value: "none"}, "dkim=none"},
		// reason= first, then the properties by key, empty ones left out.
		{Result{Method: "dkim", Value: "fail", Reason: "body hash did not verify", Props: []Prop{
			{"header.s", "sel"}, {"header.d", "example.com"}, {"header.i", ""}, {"header.b", "Zz+/0123"}}},
			`dkim=fail reason="body hash did not verify" header.b=Zz+/0123 header.d=example.com header.s=sel`},
		// Domains, addresses and tokens stand bare; the rest is quoted,
		// with '"' and '\' escaped.
		{Result{Method: "spf", Value: "pass", Props: []Prop{{"smtp.mailfrom", "o'brien+x@bücher.example"}, {"smtp.helo", "[192.0.2.1]"}}},
			`spf=pass smtp.helo="[192.0.2.1]" smtp.mailfrom=o'brien+x@bücher.example`},
		{Result{Method: "dkim", Value: "pass", Props: []Prop{{"header.b", "abc="}, {"header.d", "a b"}, {"header.s", `x"y\z`}, {"header.i", "a;b(c)"}}},
			`dkim=pass header.b="abc=" header.d="a b" header.i="a;b(c)" header.s="x\"y\\z"`},
		{Result{Method: "spf", Value: "permerror", Reason: "token"}, "spf=permerror reason=token"},
		// Control characters and invalid UTF-8 are dropped, a tab is a
		// space; a value that is left empty, or is too long to be a
		// domain or address, is left out.
		{Result{Method: "spf", Value: "permerror", Reason: "bad\r\nBcc: x\x00\u0085\xff\tterm", Props: []Prop{{"smtp.helo", "\x01\x02"}, {"smtp.mailfrom", strings.Repeat("a", 256)}}},
			`spf=permerror reason="badBcc: x term"`},
		{Result{Method: "x-new", MethodVersion: 2, Value: "ok"}, "x-new/2=ok"},
	} {
		got := Format(c.in)
		if got != c.want {
			t.Errorf("%+v:\n got %s\nwant %s", c.in, got, c.want)
			continue
		}
		rs, err := ParseResults(got)
		if err != nil || len(rs) != 1 || Format(rs[0]) != got {
			t.Errorf("%s reads back as %+v, %v", got, rs, err)
		}
	}
	if got := Format(Result{Method: "spf", Value: "pass"}, Result{Method: "dkim", Value: "none"}); got != "spf=pass; dkim=none" {
		t.Errorf("two results: %s", got)
	}
	for _, c := range []struct {
		id   string
		rs   []Result
		want string
	}{
		{"mx.example.org", nil, "mx.example.org; none"},
		{"mx.example.org", []Result{{Method: "arc", Value: "pass"}}, "mx.example.org; arc=pass"},
		{"a b", nil, `"a b"; none`},
	} {
		got := FormatField(c.id, c.rs...)
		if got != c.want {
			t.Errorf("FormatField(%q, %+v) = %s, want %s", c.id, c.rs, got, c.want)
		}
		if f, err := ParseField(got); err != nil || f.AuthServID != c.id || len(f.Results) != len(c.rs) {
			t.Errorf("%s reads back as %+v, %v", got, f, err)
		}
	}
}

// FuzzFormat: whatever a field holds, what Format writes of it is one line
// of header text that reads back to the same entries: Format is a fixed
// point after one round.
func FuzzFormat(f *testing.F) {
	f.Add("x; dkim=pass header.b=AbC/+d= header.d=example.com; spf=fail reason=\"a; \\\"b\\\"\" smtp.mailfrom=\"a b\"@c.example")
	f.Add("x; none")
	f.Add("x; a=b c.d=\x01\xff\te")
	f.Fuzz(func(t *testing.T, s string) {
		fl, _ := ParseField(s)
		once := Format(fl.Results...)
		for i := 0; i < len(once); i++ {
			if c := once[i]; c < ' ' || c == 0x7f {
				t.Fatalf("control character in %q", once)
			}
		}
		rs, err := ParseResults(once)
		if err != nil || len(rs) != len(fl.Results) {
			t.Fatalf("%q reads back as %d results, %v; want %d", once, len(rs), err, len(fl.Results))
		}
		if twice := Format(rs...); twice != once {
			t.Fatalf("not a fixed point:\n%q\n%q", once, twice)
		}
		if id := text(fl.AuthServID); id != "" {
			field := FormatField(fl.AuthServID, fl.Results...)
			if back, err := ParseField(field); err != nil || back.AuthServID != id || len(back.Results) != len(fl.Results) {
				t.Fatalf("%q reads back as %+v, %v", field, back, err)
			}
		}
	})
}
