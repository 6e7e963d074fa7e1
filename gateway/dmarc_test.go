package gateway_test

import (
	"bytes"
	"compress/gzip"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/mailgate/mailgate/state/pgtest"
)

// TestDMARCRejectForgery: a message whose From domain publishes p=reject,
// sent from a host its SPF record does not allow and without a DKIM
// signature, is refused at DATA with 550 5.7.1 and never delivered; the
// same domain's aligned SPF pass is delivered.
func TestDMARCRejectForgery(t *testing.T) {
	dns := dnstest.NewServer(t, dnstest.Zone{
		"bank.test.":        {`TXT "v=spf1 ip4:192.0.2.0/24 -all"`},
		"_dmarc.bank.test.": {`TXT "v=DMARC1; p=reject"`},
		"mail.bank.test.":   {`TXT "v=spf1 ip4:127.0.0.0/8 -all"`},
	})
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "dmarc"
kind = "dmarc"
`, dns.Addr()))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	forged := "From: CEO <ceo@bank.test>\r\nTo: b@dest.test\r\nSubject: wire\r\nMessage-ID: <forged@test>\r\n\r\npay now\r\n"
	if r := c.SendMail("ceo@bank.test", []string{"b@dest.test"}, forged); !strings.HasPrefix(r, "550 5.7.1 ") {
		t.Fatalf("forgery at DATA: %q, want 550 5.7.1", r)
	}
	// The same author, with an SPF pass of a subdomain (relaxed
	// alignment), is delivered.
	genuine := strings.ReplaceAll(forged, "forged@test", "genuine@test")
	if r := c.SendMail("bounce@mail.bank.test", []string{"b@dest.test"}, genuine); !strings.HasPrefix(r, "250") {
		t.Fatalf("aligned message at DATA: %q", r)
	}
	delivered(t, down, "genuine@test")
	waitQueueEmpty(t, g)
	for _, m := range down.Messages() {
		if strings.Contains(string(m.Data), "forged@test") {
			t.Fatal("the forgery was delivered")
		}
	}
}

// TestDMARCReportDelivered: with reports = true, the DMARC evaluations of
// a day of mail become an aggregate report that reaches the reporting
// domain's rua addresses downstream, through the pickup directory, the
// spool and the router, as a mail with the gzipped XML attached (RFC 7489
// §7.2.1.1), valid against Appendix C's schema (xmllint), with one record
// per kind of message sent. The day ends while the gateway is stopped:
// the records file is dated back, and the restarted stage reports it.
func TestDMARCReportDelivered(t *testing.T) {
	xmllint := testkit.Need(t, "xmllint", "libxml2-utils")
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	dns := dnstest.NewServer(t, dnstest.Zone{
		"sender.test.":                             {`TXT "v=spf1 ip4:127.0.0.1 -all"`},
		"other.test.":                              {`TXT "v=spf1 -all"`},
		"ed._domainkey.sender.test.":               {fmt.Sprintf(`TXT "v=DKIM1; k=ed25519; p=%s"`, base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))},
		"_dmarc.sender.test.":                      {`TXT "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test,mailto:agg@reports.test"`},
		"sender.test._report._dmarc.reports.test.": {`TXT "v=DMARC1"`}, // §7.1: reports.test takes them
	})
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test", "sender.test", "reports.test") + fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "dkim"
kind = "dkim"

[[stage]]
name = "dmarc"
kind = "dmarc"
[stage.config]
reports = true
report_from = "dmarc-reports@gateway.test"
org_name = "Gateway Test"
`, dns.Addr())
	dir := tempDir(t)
	opts := gateway.Options{Logger: testLogger(t)}
	g := startGatewayIn(t, dir, conf, opts)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO mail.sender.test", "250")
	for _, id := range []string{"pass1@test", "pass2@test"} {
		var signed bytes.Buffer
		if err := msgdkim.Sign(&signed, strings.NewReader(message(id, "hello\r\n")), &msgdkim.SignOptions{Domain: "sender.test", Selector: "ed", Signer: key}); err != nil {
			t.Fatal(err)
		}
		if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, signed.String()); !strings.HasPrefix(r, "250") {
			t.Fatalf("aligned message: %q", r)
		}
	}
	if r := c.SendMail("x@other.test", []string{"b@dest.test"}, message("forged@test", "pay\r\n")); !strings.HasPrefix(r, "550 5.7.1 ") {
		t.Fatalf("forgery: %q, want 550 5.7.1", r)
	}
	c.Cmd("QUIT", "221")
	down.WaitFor(2, waitLong)
	waitQueueEmpty(t, g)
	ctx, cancel := context.WithTimeout(context.Background(), waitLong)
	defer cancel()
	g.Shutdown(ctx)

	// Midnight passes: the day's records (UTC) become a past day's.
	records := filepath.Join(dir, "dmarc", "records")
	files, _ := filepath.Glob(filepath.Join(records, "*.jsonl"))
	var rows []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rows = append(rows, b...)
		os.Remove(f)
	}
	day := time.Now().UTC().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	if err := os.WriteFile(filepath.Join(records, day.Format(time.DateOnly)+".jsonl"), rows, 0o640); err != nil {
		t.Fatal(err)
	}
	g = startGatewayIn(t, dir, conf, opts)

	var report smtptest.Message
	waitUntil(t, waitLong, "the aggregate report downstream", func() bool {
		for _, m := range down.Messages() {
			if m.From == "dmarc-reports@gateway.test" {
				report = m
				return true
			}
		}
		return false
	})
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 3 {
		t.Errorf("%d messages downstream, want the two aligned ones and one report", n)
	}
	if got := strings.Join(report.Rcpts, " "); got != "dmarc@sender.test agg@reports.test" {
		t.Errorf("report sent to %s", got)
	}
	begin, end := day.Unix(), day.Unix()+86399
	m, err := mail.ReadMessage(bytes.NewReader(report.Data))
	if err != nil {
		t.Fatal(err)
	}
	if s := m.Header.Get("Subject"); !strings.HasPrefix(s, "Report Domain: sender.test Submitter: gateway.test Report-ID: <") {
		t.Errorf("Subject %q", s)
	}
	doc := gzipAttachment(t, m, fmt.Sprintf("gateway.test!sender.test!%d!%d.xml.gz", begin, end))
	xmlFile := filepath.Join(t.TempDir(), "report.xml")
	os.WriteFile(xmlFile, doc, 0o600)
	if out, err := exec.Command(xmllint, "--noout", "--schema", "../stages/dmarc/testdata/rfc7489-appendix-c.xsd", xmlFile).CombinedOutput(); err != nil {
		t.Fatalf("xmllint: %v\n%s\n%s", err, out, doc)
	}

	var fb struct {
		OrgName string `xml:"report_metadata>org_name"`
		Email   string `xml:"report_metadata>email"`
		Begin   int64  `xml:"report_metadata>date_range>begin"`
		End     int64  `xml:"report_metadata>date_range>end"`
		Domain  string `xml:"policy_published>domain"`
		P       string `xml:"policy_published>p"`
		Records []struct {
			SourceIP    string `xml:"row>source_ip"`
			Count       int    `xml:"row>count"`
			Disposition string `xml:"row>policy_evaluated>disposition"`
			DKIM        string `xml:"row>policy_evaluated>dkim"`
			SPF         string `xml:"row>policy_evaluated>spf"`
			EnvFrom     string `xml:"identifiers>envelope_from"`
			HeaderFrom  string `xml:"identifiers>header_from"`
			AuthDKIM    []struct {
				Domain   string `xml:"domain"`
				Selector string `xml:"selector"`
				Result   string `xml:"result"`
			} `xml:"auth_results>dkim"`
			AuthSPF []struct {
				Domain string `xml:"domain"`
				Scope  string `xml:"scope"`
				Result string `xml:"result"`
			} `xml:"auth_results>spf"`
		} `xml:"record"`
	}
	if err := xml.Unmarshal(doc, &fb); err != nil {
		t.Fatal(err)
	}
	if fb.OrgName != "Gateway Test" || fb.Email != "dmarc-reports@gateway.test" || fb.Begin != begin || fb.End != end ||
		fb.Domain != "sender.test" || fb.P != "reject" {
		t.Errorf("report metadata or policy_published wrong:\n%s", doc)
	}
	var got []string
	for _, r := range fb.Records {
		s := fmt.Sprintf("%s x%d %s dkim=%s spf=%s from=%s/%s", r.SourceIP, r.Count, r.Disposition, r.DKIM, r.SPF, r.EnvFrom, r.HeaderFrom)
		for _, d := range r.AuthDKIM {
			s += fmt.Sprintf(" dkim:%s/%s=%s", d.Domain, d.Selector, d.Result)
		}
		for _, s2 := range r.AuthSPF {
			s += fmt.Sprintf(" spf:%s/%s=%s", s2.Domain, s2.Scope, s2.Result)
		}
		got = append(got, s)
	}
	slices.Sort(got)
	want := []string{
		"127.0.0.1 x1 reject dkim=fail spf=fail from=other.test/sender.test spf:other.test/mfrom=fail",
		"127.0.0.1 x2 none dkim=pass spf=pass from=sender.test/sender.test dkim:sender.test/ed=pass spf:sender.test/mfrom=pass",
	}
	if !slices.Equal(got, want) {
		t.Errorf("records:\n got %q\nwant %q\n%s", got, want, doc)
	}
	// Handed over once: nothing is left to send again.
	for _, d := range []string{records, filepath.Join(dir, "dmarc", "outbox"), filepath.Join(dir, "pickup", ".queued")} {
		if names := dirNames(t, d); len(names) != 0 {
			t.Errorf("%s holds %v after the report went out", d, names)
		}
	}
}

// gzipAttachment returns the gunzipped content of m's attachment name.
func gzipAttachment(t *testing.T, m *mail.Message, name string) []byte {
	t.Helper()
	_, params, err := mime.ParseMediaType(m.Header.Get("Content-Type"))
	if err != nil {
		t.Fatal(err)
	}
	mr := multipart.NewReader(m.Body, params["boundary"])
	for {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("no attachment %s: %v", name, err)
		}
		if p.FileName() != name {
			continue
		}
		if ct := p.Header.Get("Content-Type"); ct != "application/gzip" {
			t.Errorf("attachment type %q", ct)
		}
		zr, err := gzip.NewReader(base64.NewDecoder(base64.StdEncoding, p))
		if err != nil {
			t.Fatal(err)
		}
		doc, err := io.ReadAll(zr)
		if err != nil {
			t.Fatal(err)
		}
		return doc
	}
}

// TestClusterDMARCReportOnce: two nodes of a cluster evaluate DMARC for
// one domain, an aligned message at A and a forgery at B, while the
// cluster's PostgreSQL is stopped; the day ends with both nodes down.
// When PostgreSQL and the nodes are back, each node's records reach the
// store, one node claims the day, and the domain gets one report with
// both nodes' records.
func TestClusterDMARCReportOnce(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	dns := dnstest.NewServer(t, dnstest.Zone{
		"sender.test.":               {`TXT "v=spf1 ip4:127.0.0.1 -all"`},
		"other.test.":                {`TXT "v=spf1 -all"`},
		"ed._domainkey.sender.test.": {fmt.Sprintf(`TXT "v=DKIM1; k=ed25519; p=%s"`, base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))},
		"_dmarc.sender.test.":        {`TXT "v=DMARC1; p=reject; rua=mailto:dmarc@sender.test"`},
	})
	pg := pgtest.Start(t)
	db := pg.NewDatabase(t)
	pg.Stop()
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test", "sender.test") + fmt.Sprintf(`
[dns]
servers = [%q]

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "dkim"
kind = "dkim"

[[stage]]
name = "dmarc"
kind = "dmarc"
[stage.config]
reports = true
report_from = "dmarc-reports@gateway.test"
org_name = "Gateway Test"
`, dns.Addr())
	names := []string{"a", "b"}
	dirs := []string{tempDir(t), tempDir(t)}
	opts := gateway.Options{Logger: testLogger(t)}
	var signed bytes.Buffer
	if err := msgdkim.Sign(&signed, strings.NewReader(message("pass@test", "hello\r\n")), &msgdkim.SignOptions{Domain: "sender.test", Selector: "ed", Signer: key}); err != nil {
		t.Fatal(err)
	}
	for i, name := range names {
		g := startGatewayIn(t, dirs[i], conf+pgConfig(name, db, ""), opts)
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO mail.sender.test", "250")
		if i == 0 {
			queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, signed.String()))
		} else if r := c.SendMail("x@other.test", []string{"b@dest.test"}, message("forged@test", "pay\r\n")); !strings.HasPrefix(r, "550 5.7.1 ") {
			t.Fatalf("forgery at B: %q", r)
		}
		c.Cmd("QUIT", "221")
		waitQueueEmpty(t, g)
		ctx, cancel := context.WithTimeout(context.Background(), waitLong)
		g.Shutdown(ctx)
		cancel()
	}

	// Midnight passes (UTC) with both nodes down: the records become
	// those of a day two days ago.
	day := time.Now().UTC().AddDate(0, 0, -2).Truncate(24 * time.Hour)
	for _, dir := range dirs {
		records := filepath.Join(dir, "dmarc", "records")
		files, _ := filepath.Glob(filepath.Join(records, "*.jsonl"))
		var rows []byte
		for _, f := range files {
			b, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
				var row map[string]any
				if err := json.Unmarshal([]byte(line), &row); err != nil {
					t.Fatal(err)
				}
				row["time"] = day.Add(time.Hour).Unix()
				out, _ := json.Marshal(row)
				rows = append(append(rows, out...), '\n')
			}
			os.Remove(f)
		}
		if len(rows) == 0 {
			t.Fatalf("no DMARC records in %s", records)
		}
		if err := os.WriteFile(filepath.Join(records, day.Format(time.DateOnly)+".jsonl"), rows, 0o640); err != nil {
			t.Fatal(err)
		}
	}
	pg.Restart()
	var nodes []*gateway.Gateway
	for i, name := range names {
		nodes = append(nodes, startGatewayIn(t, dirs[i], conf+pgConfig(name, db, ""), opts))
	}

	reports := func() []smtptest.Message {
		var out []smtptest.Message
		for _, m := range down.Messages() {
			if m.From == "dmarc-reports@gateway.test" {
				out = append(out, m)
			}
		}
		return out
	}
	// A node claims a day once PostgreSQL has answered it for 30s.
	waitUntil(t, 3*waitLong, "the day's report downstream", func() bool { return len(reports()) > 0 })
	// Both nodes sent their records and dropped their day files; one
	// reported the day; nothing is left to go out.
	sent := 0
	for i, dir := range dirs {
		waitUntil(t, waitLong, "the node's records to be in the store", func() bool {
			left, _ := filepath.Glob(filepath.Join(dir, "dmarc", "records", "*.jsonl"))
			return len(left) == 0
		})
		if _, err := os.Stat(filepath.Join(dir, "dmarc", "cluster", day.Format(time.DateOnly)+".jsonl.sent")); err == nil {
			sent++
		}
		waitQueueEmpty(t, nodes[i])
	}
	if sent != 1 {
		t.Fatalf("%d nodes reported the day; want 1", sent)
	}
	got := reports()
	if len(got) != 1 {
		t.Fatalf("%d reports downstream; want 1", len(got))
	}
	m, err := mail.ReadMessage(bytes.NewReader(got[0].Data))
	if err != nil {
		t.Fatal(err)
	}
	doc := string(gzipAttachment(t, m, fmt.Sprintf("gateway.test!sender.test!%d!%d.xml.gz", day.Unix(), day.Unix()+86399)))
	for _, want := range []string{"<disposition>reject</disposition>", "<envelope_from>other.test</envelope_from>", "<dkim>pass</dkim>", "<envelope_from>sender.test</envelope_from>"} {
		if !strings.Contains(doc, want) {
			t.Errorf("the report lacks %s, from one node's records:\n%s", want, doc)
		}
	}
}
