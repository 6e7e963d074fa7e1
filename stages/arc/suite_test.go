package arc

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// suiteCase is one test entry of the ValiMail ARC suite (testdata/, see
// its README): the fields of a validation or a signing case.
type suiteCase struct {
	doc    int    // the YAML document, from 1
	name   string // the test's name; document 7 has four names twice
	fields map[string]string
}

// suiteDoc is one YAML document: its cases and DNS records, and for the
// signing suite its domain, selector and private key.
type suiteDoc struct {
	cases   []suiteCase
	records map[string]string
	top     map[string]string
}

// loadSuite reads every document of a suite file. yaml.Unmarshal would
// read the first document only, and decoding into a map would refuse
// document 7 of the validation suite, which has duplicate test names, so
// each document is decoded into a yaml.Node and walked: every entry
// counts, duplicates included.
func loadSuite(t *testing.T, file string) []suiteDoc {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dec := yaml.NewDecoder(f)
	var docs []suiteDoc
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			if errors.Is(err, io.EOF) {
				return docs
			}
			t.Fatalf("%s: document %d: %v", file, len(docs)+1, err)
		}
		if n.Kind != yaml.DocumentNode || len(n.Content) != 1 || n.Content[0].Kind != yaml.MappingNode {
			t.Fatalf("%s: document %d is not a mapping", file, len(docs)+1)
		}
		d := suiteDoc{records: map[string]string{}, top: map[string]string{}}
		root := n.Content[0].Content
		for i := 0; i+1 < len(root); i += 2 {
			key, val := root[i].Value, root[i+1]
			switch key {
			case "tests":
				for j := 0; j+1 < len(val.Content); j += 2 {
					c := suiteCase{doc: len(docs) + 1, name: val.Content[j].Value, fields: map[string]string{}}
					body := val.Content[j+1].Content
					for k := 0; k+1 < len(body); k += 2 {
						c.fields[body[k].Value] = body[k+1].Value
					}
					d.cases = append(d.cases, c)
				}
			case "txt-records":
				for j := 0; j+1 < len(val.Content); j += 2 {
					d.records[val.Content[j].Value] = val.Content[j+1].Value
				}
			default:
				d.top[key] = val.Value
			}
		}
		docs = append(docs, d)
	}
}

// serveRecords serves a document's TXT records on a loopback DNS server,
// as the suite's harness does: the value as written (YAML folding leaves
// spaces or newlines inside p=, which RFC 6376 §3.6.1 allows and the key
// parser strips), cut into strings of 255 bytes.
func serveRecords(t *testing.T, records map[string]string) *resolver.Resolver {
	t.Helper()
	srv := dnstest.NewServer(t, nil)
	for name, v := range records {
		var parts []string
		for len(v) > 255 {
			parts, v = append(parts, v[:255]), v[255:]
		}
		parts = append(parts, v)
		for i, p := range parts {
			// miekg/dns holds TXT strings in presentation form.
			parts[i] = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(p)
		}
		srv.Add(&dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}, Txt: parts})
	}
	r, err := resolver.New([]string{srv.Addr()}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// parseMessage splits a suite message, written with LF line ends, into
// the header and body the gateway would hold: CRLF line ends, as on the
// wire and in the spool.
func parseMessage(t *testing.T, msg string) (stages.Header, stages.Body) {
	t.Helper()
	r := bufio.NewReader(bytes.NewReader(stages.CRLF([]byte(msg))))
	h, err := stages.ParseHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(r)
	return h, stages.BytesBody(body)
}

// disagreements are the validation cases where this stage gives another
// status than the suite, which follows draft-18 of the ARC protocol, and
// why RFC 8617 says so. Nothing else may differ.
var disagreements = map[string]string{
	// The suite writes "cv: |" over a blank line, an empty status: its
	// harness wants no verdict at all for a chain whose seal says
	// cv=fail. RFC 8617 §5.2 step 2 (the newest seal) and step 3 (an
	// older one: cv MUST be none at i=1 and pass above) make it "fail".
	"cv_fail_i1_as_cv_fail": "RFC 8617 §5.2 step 2: the newest AS has cv=fail, so the status is fail (suite: no verdict)",
	"cv_fail_i2_as2_fail":   "RFC 8617 §5.2 step 2: the newest AS has cv=fail, so the status is fail (suite: no verdict)",
	"cv_fail_i2_as1_fail":   "RFC 8617 §5.2 step 3: AS i=1 must have cv=none, so the status is fail (suite: no verdict)",
	// The AMS has no c= tag and was signed with relaxed header
	// canonicalization: the suite's generator (dkimpy) defaults c= to
	// relaxed/relaxed for ARC. RFC 8617 §4.1.2 gives the AMS the
	// semantics of DKIM-Signature, whose c= defaults to simple/simple
	// (RFC 6376 §3.5), and in simple form the signature does not verify.
	"ams_fields_c_na": "RFC 8617 §4.1.2 and RFC 6376 §3.5: no c= means simple/simple, and the AMS was made relaxed (suite: pass, dkimpy's default)",
}

// Published pass counts (README.md): every entry of the validation
// suite, and every signing case.
const (
	validationEntries = 175
	validationAgree   = 171
	signingCases      = 17
	signingAgree      = 17
)

// TestValidationSuite runs all 175 entries (171 names) of the 10 documents
// of the validation suite, through the real resolver against a loopback
// DNS server, and fails on any change of the published counts.
func TestValidationSuite(t *testing.T) {
	docs := loadSuite(t, "testdata/arc-draft-validation-tests.yml")
	if len(docs) != 10 {
		t.Fatalf("%d documents; want 10", len(docs))
	}
	entries, agree := 0, 0
	names := map[string]bool{}
	var differ []string
	for _, d := range docs {
		v := verifier{lookup: dkimcore.ResolverTXT(serveRecords(t, d.records))}
		for _, c := range d.cases {
			entries++
			names[c.name] = true
			want := strings.ToLower(strings.TrimSpace(c.fields["cv"]))
			h, body := parseMessage(t, c.fields["message"])
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			out := v.check(ctx, h, body)
			cancel()
			if string(out.CV) == want {
				agree++
				continue
			}
			why, known := disagreements[c.name]
			if !known {
				t.Errorf("document %d %s (%s): cv=%s (%s); the suite says %q", c.doc, c.name, c.fields["description"], out.CV, out.Problem, want)
				continue
			}
			if out.CV != Fail {
				t.Errorf("document %d %s: cv=%s; RFC 8617 says fail: %s", c.doc, c.name, out.CV, why)
			}
			differ = append(differ, c.name)
		}
	}
	slices.Sort(differ)
	var wantDiffer []string
	for n := range disagreements {
		wantDiffer = append(wantDiffer, n)
	}
	slices.Sort(wantDiffer)
	if !slices.Equal(differ, wantDiffer) {
		t.Errorf("cases that differ from the suite: %v; want exactly %v", differ, wantDiffer)
	}
	if entries != validationEntries || len(names) != 171 || agree != validationAgree {
		t.Errorf("%d entries (%d names), %d agree; README publishes %d entries (171 names), %d agree",
			entries, len(names), agree, validationEntries, validationAgree)
	}
	t.Logf("validation suite: %d of %d entries agree", agree, entries)
}
