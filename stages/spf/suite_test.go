package spf

import (
	"context"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/resolver"
)

// suiteScenario is one YAML document of the RFC 7208 test suite.
type suiteScenario struct {
	Description string               `yaml:"description"`
	Tests       map[string]suiteTest `yaml:"tests"`
	Zonedata    map[string][]any     `yaml:"zonedata"`
}

type suiteTest struct {
	Host        string    `yaml:"host"`
	Helo        string    `yaml:"helo"`
	MailFrom    string    `yaml:"mailfrom"`
	Result      yaml.Node `yaml:"result"` // a word or a list of words
	Explanation string    `yaml:"explanation"`
}

func loadSuite(t *testing.T) []suiteScenario {
	t.Helper()
	f, err := os.Open("testdata/pyspf-rfc7208-tests.yml")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var all []suiteScenario
	dec := yaml.NewDecoder(f)
	for {
		var s suiteScenario
		if err := dec.Decode(&s); err != nil {
			if err.Error() == "EOF" {
				return all
			}
			t.Fatalf("suite: %v", err)
		}
		all = append(all, s)
	}
}

// serveZone serves a scenario's zonedata as pyspf's test driver does.
func serveZone(t *testing.T, zone map[string][]any) *dnstest.Server {
	t.Helper()
	srv := dnstest.NewServer(t, nil)
	for name, entries := range zone {
		owner := escapeName(name) + "."
		var rrs []dns.RR
		var spf [][]string
		hasTXT, timeout := false, false
		hdr := func(rrtype uint16) dns.RR_Header {
			return dns.RR_Header{Name: owner, Rrtype: rrtype, Class: dns.ClassINET, Ttl: 300}
		}
		for _, e := range entries {
			if e == "TIMEOUT" {
				timeout = true
				continue
			}
			m, ok := e.(map[string]any)
			if !ok || len(m) != 1 {
				t.Fatalf("%s: unexpected entry %#v", name, e)
			}
			for typ, v := range m {
				switch typ {
				case "SPF", "TXT":
					if typ == "TXT" {
						hasTXT = true
						if v == "NONE" {
							continue
						}
					}
					strs := txtStrings(t, v)
					if typ == "SPF" {
						spf = append(spf, strs)
						rrs = append(rrs, &dns.SPF{Hdr: hdr(dns.TypeSPF), Txt: strs})
					} else {
						rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: strs})
					}
				case "A":
					rrs = append(rrs, &dns.A{Hdr: hdr(dns.TypeA), A: netip.MustParseAddr(v.(string)).AsSlice()})
				case "AAAA":
					rrs = append(rrs, &dns.AAAA{Hdr: hdr(dns.TypeAAAA), AAAA: netip.MustParseAddr(v.(string)).AsSlice()})
				case "MX":
					mx := v.([]any)
					rrs = append(rrs, &dns.MX{Hdr: hdr(dns.TypeMX), Preference: uint16(mx[0].(int)), Mx: dns.Fqdn(escapeName(mx[1].(string)))})
				case "PTR":
					rrs = append(rrs, &dns.PTR{Hdr: hdr(dns.TypePTR), Ptr: dns.Fqdn(escapeName(v.(string)))})
				case "CNAME":
					rrs = append(rrs, &dns.CNAME{Hdr: hdr(dns.TypeCNAME), Target: dns.Fqdn(escapeName(v.(string)))})
				default:
					t.Fatalf("%s: unexpected record type %s", name, typ)
				}
			}
		}
		if !hasTXT {
			for _, strs := range spf {
				rrs = append(rrs, &dns.TXT{Hdr: hdr(dns.TypeTXT), Txt: strs})
			}
		}
		if timeout {
			srv.Set(name, "TIMEOUT")
		}
		srv.Add(rrs...)
	}
	return srv
}

// txtStrings turns a TXT value (one string or a list) into character-strings
// in miekg/dns's presentation form.
func txtStrings(t *testing.T, v any) []string {
	var raw []string
	switch v := v.(type) {
	case string:
		raw = []string{v}
	case []any:
		for _, s := range v {
			raw = append(raw, s.(string))
		}
	default:
		t.Fatalf("unexpected TXT value %#v", v)
	}
	out := []string{}
	for _, s := range raw {
		var b strings.Builder
		for i := 0; i < len(s); i++ {
			switch ch := s[i]; {
			case ch == '\\' || ch == '"':
				b.WriteByte('\\')
				b.WriteByte(ch)
			case ch < ' ' || ch > '~':
				b.WriteString(escapeName(string(ch)))
			default:
				b.WriteByte(ch)
			}
		}
		out = append(out, b.String())
	}
	return out
}

// TestRFC7208Suite runs every test of the openspf RFC 7208 suite against
// check, with each scenario's zone served by a real DNS server.
func TestRFC7208Suite(t *testing.T) {
	var passed atomic.Int32
	total := 0
	for _, sc := range loadSuite(t) {
		total += len(sc.Tests)
		t.Run(sc.Description, func(t *testing.T) {
			srv := serveZone(t, sc.Zonedata)
			// The timeout is what TIMEOUT names cost; it must also be long
			// enough for a loaded machine (-race) to answer the others.
			r, err := resolver.New([]string{srv.Addr()}, 2*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for name, tc := range sc.Tests {
				t.Run(name, func(t *testing.T) {
					t.Parallel()
					runSuiteTest(t, r, tc)
					passed.Add(1)
				})
			}
		})
	}
	t.Logf("RFC 7208 suite: %d of %d tests pass", passed.Load(), total)
	if total != 203 {
		t.Errorf("suite has %d tests, want 203", total)
	}
}

func runSuiteTest(t *testing.T, r *resolver.Resolver, tc suiteTest) {
	var want []string
	if err := tc.Result.Decode(&want); err != nil {
		var one string
		if err := tc.Result.Decode(&one); err != nil {
			t.Fatalf("result: %v", err)
		}
		want = []string{one}
	}
	sender := tc.MailFrom
	if sender == "" {
		sender = "postmaster@" + tc.Helo
	}
	o := check(context.Background(), r, netip.MustParseAddr(tc.Host), sender, tc.Helo, "mx.example.test", time.Now())
	if !slices.Contains(want, string(o.Result)) {
		t.Fatalf("got %s (%s), want %v", o.Result, o.Problem, want)
	}
	// DEFAULT means the receiver's own text: no exp= explanation. The
	// suite writes IPv6 nibbles in upper case; RFC 7208's examples (§7.4)
	// and this code use lower case, so case is ignored.
	wantExp := tc.Explanation
	if wantExp == "DEFAULT" {
		wantExp = ""
	}
	if tc.Explanation != "" && !strings.EqualFold(o.Explanation, wantExp) {
		t.Fatalf("explanation %q, want %q", o.Explanation, wantExp)
	}
}
