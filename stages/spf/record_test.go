package spf

import (
	"strconv"
	"strings"
	"testing"
)

func TestParseRecord(t *testing.T) {
	tests := []struct {
		record string
		want   string // terms as kind/qual/cidr4/cidr6, space separated; or "error: ..." substring
	}{
		{"v=spf1", ""},
		{"V=SPF1 -ALL", "all/fail"},
		{"v=spf1  a   mx/24  ~ptr:example.com ?exists:%{i}.bl.example.com ", "a/pass/32/128 mx/pass/24/128 ptr/softfail exists/neutral"},
		{"v=spf1 a:example.com/24//64 mx//0 a/0", "a/pass/24/64 mx/pass/32/0 a/pass/0/128"},
		{"v=spf1 ip4:192.0.2.0/24 ip6:2001:db8::/32 +ip4:192.0.2.1", "ip4/pass 192.0.2.0/24 ip6/pass 2001:db8::/32 ip4/pass 192.0.2.1/32"},
		{"v=spf1 ip4:192.0.2.129/25", "ip4/pass 192.0.2.128/25"},
		{"v=spf1 a:foo:bar/baz.example.com", "a/pass/32/128"},
		{"v=spf1 include:_spf.example.com redirect=_spf.example.net exp=explain.%{d}", "include/pass"},
		{"v=spf1 moo.cow-far_out=man:dog/cat -all", "all/fail"},
		{"v=spf1 a:%{H}", "a/pass/32/128"},

		{"v=spf10", "error: not an SPF record"},
		{"v=spf1 -all moo", "error: unknown mechanism"},
		{"v=spf1 -all.", "error: unknown mechanism"},
		{"v=spf1 -all:x", "error: all takes no argument"},
		{"v=spf1 a//129", "error: above 128"},
		{"v=spf1 a/33", "error: above 32"},
		{"v=spf1 a/24/64", "error: invalid prefix length"},
		{"v=spf1 ip4:1.2.3.4/032", "error: invalid prefix length"},
		{"v=spf1 ip4:1.2.3", "error: invalid address"},
		{"v=spf1 ip4:1.2.3.4:8080", "error: invalid address"},
		{"v=spf1 ip4:1.2.3.4//32", "error: invalid prefix length"},
		{"v=spf1 ip6:192.0.2.1", "error: not an ip6 address"},
		{"v=spf1 ip4:2001:db8::1", "error: not an ip4 address"},
		{"v=spf1 ip6:fe80::1%eth0", "error: invalid address"},
		{"v=spf1 ptr/0", "error: ptr takes no prefix length"},
		{"v=spf1 include", "error: missing domain"},
		{"v=spf1 exists:", "error: empty domain"},
		{"v=spf1 a:museum", "error: does not end in a top-level domain"},
		{"v=spf1 a:abc.123", "error: does not end in a top-level domain"},
		{"v=spf1 a:example.-com", "error: does not end in a top-level domain"},
		{"v=spf1 a:example.com:8080", "error: does not end in a top-level domain"},
		{"v=spf1 redirect=a.example.com redirect=b.example.com", "error: modifier appears twice"},
		{"v=spf1 exp=", "error: empty domain"},
		{"v=spf1 redirect:example.com", "error: unknown mechanism"},
		{"v=spf1 1up=foo", "error: unknown mechanism"},
		{"v=spf1 foo=%abc", "error: '%' followed by 'a'"},
		{"v=spf1 exists:%{r}.example.com", "error: only allowed in explanations"},
		{"v=spf1 exists:%{x}.example.com", "error: unknown macro letter"},
		{"v=spf1 exists:%{d0}.example.com", "error: zero transformer"},
		{"v=spf1 exists:%{d2r!}.example.com", "error: invalid delimiter"},
		{"v=spf1 exists:%{d.example.com", "error: unterminated macro"},
		{"v=spf1 a:ctrl.example.com\rptr", "error: invalid character"},
		{"v=spf1 a:caf\xc3\xa9.example.com", "error: invalid character"},
		{"v=spf1\t-all", "error: not an SPF record"},
	}
	for _, tt := range tests {
		rec, err := parseRecord(tt.record)
		if wantErr, ok := strings.CutPrefix(tt.want, "error: "); ok {
			if err == nil || !strings.Contains(err.Error(), wantErr) {
				t.Errorf("%q: error %v, want %q", tt.record, err, wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tt.record, err)
			continue
		}
		if got := describeTerms(rec); got != tt.want {
			t.Errorf("%q:\n got %s\nwant %s", tt.record, got, tt.want)
		}
	}
}

func describeTerms(rec *record) string {
	var out []string
	for _, m := range rec.terms {
		s := m.kind + "/" + string(m.qual)
		switch m.kind {
		case "a", "mx":
			s += "/" + strconv.Itoa(m.cidr4) + "/" + strconv.Itoa(m.cidr6)
		case "ip4", "ip6":
			s += " " + m.net.String()
		}
		out = append(out, s)
	}
	return strings.Join(out, " ")
}

// FuzzParseRecord feeds arbitrary text to the record parser: it must never
// panic, and what it accepts must be well formed.
func FuzzParseRecord(f *testing.F) {
	for _, s := range []string{
		"v=spf1 -all",
		"v=spf1 a mx ptr include:_spf.example.com ip4:192.0.2.0/24 ip6:2001:db8::/32 exists:%{ir}.%{v}._spf.%{d2} ~all",
		"v=spf1 a:%{l1r-}.example.com/24//64 redirect=%{d}.example.net exp=e.%{o}",
		"v=spf1 moo.cow-far_out=man:dog/cat %{",
		"v=spf1 a/0//0 mx:foo:bar/baz.example.com//128 ?exists:%%%_%-.example.com",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := parseRecord(s)
		if err != nil {
			return
		}
		for _, m := range rec.terms {
			switch m.kind {
			case "all", "include", "a", "mx", "ptr", "exists":
			case "ip4", "ip6":
				if !m.net.IsValid() || m.net.Addr().Is4() != (m.kind == "ip4") {
					t.Fatalf("%q: bad network %v", s, m.net)
				}
			default:
				t.Fatalf("%q: accepted mechanism %q", s, m.kind)
			}
			if m.cidr4 < 0 || m.cidr4 > 32 || m.cidr6 < 0 || m.cidr6 > 128 {
				t.Fatalf("%q: prefix lengths %d/%d", s, m.cidr4, m.cidr6)
			}
			if (m.kind == "include" || m.kind == "exists") && len(m.domain) == 0 {
				t.Fatalf("%q: %s without a domain", s, m.kind)
			}
		}
	})
}
