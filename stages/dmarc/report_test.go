package dmarc

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"net/mail"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/testkit"
)

var reportZone = dnstest.Zone{
	"_dmarc.example.com.": {`TXT "v=DMARC1; p=reject; rua=mailto:dmarc@example.com,mailto:agg@reports.example,mailto:nobody@unverified.example"`},
	// §7.1: reports.example agrees to receive example.com's reports;
	// unverified.example does not.
	"example.com._report._dmarc.reports.example.": {`TXT "v=DMARC1"`},
	"_dmarc.small.test.":                          {`TXT "v=DMARC1; p=none; rua=mailto:r@small.test!1k"`},
}

// reportFilter is a dmarc stage with reports on, its clock at now.
func reportFilter(t *testing.T, dir string, now *time.Time) *Filter {
	t.Helper()
	srv := dnstest.NewServer(t, reportZone)
	f, err := build(stages.Env{DNSServers: []string{srv.Addr()}, DataDir: dir, Hostname: "mx.example.test"}, stages.JSONConfig([]byte(
		`{"reports": true, "report_from": "dmarc-reports@example.test", "org_name": "Example Corp", "trusted_arc_sealers": ["lists.example.org"], "cache_size": 0}`)),
		func() time.Time { return *now }, func() int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// TestAggregateReport: a day of traffic becomes one report per reporting
// domain, sent to the verified rua addresses only, valid against RFC 7489
// Appendix C's schema; it is handed over once, however often the daily
// run comes, and the records survive a new stage instance (a restart).
func TestAggregateReport(t *testing.T) {
	xmllint := testkit.Need(t, "xmllint", "libxml2-utils")
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	f := reportFilter(t, dir, &now)
	send := func(ip, from string, results ...stages.Result) {
		tx := msg(from, results...)
		tx.Client.Addr = netip.MustParseAddr(ip)
		tx.Rcpts = []string{"b@dest.test"}
		if _, err := f.Run(context.Background(), stages.Data, tx); err != nil {
			t.Fatal(err)
		}
	}
	send("192.0.2.1", "a@example.com", spf("pass", "example.com"))
	send("192.0.2.1", "a@example.com", spf("pass", "example.com"))
	send("2001:db8::1", "a@example.com", spf("fail", "sender.test"), dkim("dkim=fail header.d=example.com header.s=s1"))
	send("192.0.2.9", "a@example.com", spf("fail", "sender.test"), arc("pass"))
	// A restart: a new instance on the same data dir keeps the records.
	f = reportFilter(t, dir, &now)
	tx := withSeals(msg("a@example.com", arc("pass")), "lists.example.org")
	tx.Client.Addr = netip.MustParseAddr("198.51.100.7")
	f.Run(context.Background(), stages.Data, tx)
	send("192.0.2.1", "a@small.test")

	rep := f.reporter.(*Reporter)
	// The day is not over: nothing to send.
	if err := rep.SendDue(context.Background(), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p := pickups(t, dir); len(p) != 0 {
		t.Fatalf("pickup before the day ended: %v", p)
	}
	next := now.Add(24 * time.Hour)
	for range 2 { // the daily run twice: one report
		if err := rep.SendDue(context.Background(), next); err != nil {
			t.Fatal(err)
		}
	}
	p := pickups(t, dir)
	if len(p) != 1 || filepath.Base(p[0]) != "dmarc-2026-12-05-example.com.eml" {
		t.Fatalf("pickup files %v; want one for example.com (small.test's report is over its 1k limit)", p)
	}
	env, m := readPickup(t, p[0])
	if env.From != "dmarc-reports@example.test" || strings.Join(env.Rcpts, " ") != "dmarc@example.com agg@reports.example" {
		t.Errorf("envelope %+v", env)
	}
	if s := m.Header.Get("Subject"); !strings.HasPrefix(s, "Report Domain: example.com Submitter: example.test Report-ID: <2026-12-05.") {
		t.Errorf("Subject %q", s)
	}
	doc := attachment(t, m, "example.test!example.com!1796428800!1796515199.xml.gz")
	xmlFile := filepath.Join(t.TempDir(), "report.xml")
	os.WriteFile(xmlFile, doc, 0o600)
	if out, err := exec.Command(xmllint, "--noout", "--schema", "testdata/rfc7489-appendix-c.xsd", xmlFile).CombinedOutput(); err != nil {
		t.Fatalf("xmllint: %v\n%s\n%s", err, out, doc)
	}
	for _, want := range []string{
		"<org_name>Example Corp</org_name>", "<domain>example.com</domain>", "<p>reject</p>",
		"<source_ip>192.0.2.1</source_ip>", "<count>2</count>", "<domain>sender.test</domain>\n        <scope>mfrom</scope>\n        <result>none</result>",
		"<source_ip>2001:db8:0:0:0:0:0:1</source_ip>",
		"<type>trusted_forwarder</type>", "<comment>arc=pass as.d=lists.example.org</comment>",
		"<selector>s1</selector>", "<envelope_to>dest.test</envelope_to>",
	} {
		if !bytes.Contains(doc, []byte(want)) {
			t.Errorf("report lacks %q:\n%s", want, doc)
		}
	}
	if n := bytes.Count(doc, []byte("<record>")); n != 4 {
		t.Errorf("%d records, want 4 (two identical rows counted together)", n)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "dmarc", "records", "*")); len(left) != 0 {
		t.Errorf("records left after the report: %v", left)
	}
}

// TestReportCrashBeforeHandOver: a run that wrote the outbox but died
// before removing the day's records writes the same files again; the
// next run hands over each once.
func TestReportCrashBeforeHandOver(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	f := reportFilter(t, dir, &now)
	f.Run(context.Background(), stages.Data, msg("a@example.com"))
	rep := f.reporter.(*Reporter)
	file := filepath.Join(rep.records, "2026-12-05.jsonl")
	if err := rep.reportDay(context.Background(), "2026-12-05", file); err != nil {
		t.Fatal(err)
	}
	// "crash": the outbox holds the report, the records are still there.
	if err := rep.SendDue(context.Background(), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p := pickups(t, dir); len(p) != 1 {
		t.Fatalf("pickup files %v, want 1", p)
	}
	if out, _ := os.ReadDir(rep.outbox); len(out) != 0 {
		t.Errorf("outbox not empty: %v", out)
	}
}

func pickups(t *testing.T, dir string) []string {
	t.Helper()
	p, err := filepath.Glob(filepath.Join(dir, "pickup", "*.eml"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func readPickup(t *testing.T, file string) (stages.Pickup, *mail.Message) {
	t.Helper()
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	env, err := stages.ReadPickup(br)
	if err != nil {
		t.Fatal(err)
	}
	m, err := mail.ReadMessage(br)
	if err != nil {
		t.Fatal(err)
	}
	return env, m
}

// attachment returns the gunzipped attachment called name.
func attachment(t *testing.T, m *mail.Message, name string) []byte {
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
		if p.Header.Get("Content-Type") != "application/gzip" {
			t.Errorf("attachment type %q", p.Header.Get("Content-Type"))
		}
		raw, _ := io.ReadAll(p)
		dec, err := decodeBase64(raw)
		if err != nil {
			t.Fatal(err)
		}
		zr, err := gzip.NewReader(bytes.NewReader(dec))
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

func decodeBase64(b []byte) ([]byte, error) {
	s := strings.Join(strings.Fields(string(b)), "")
	return base64Std.DecodeString(s)
}

var base64Std = base64.StdEncoding

// TestAggregateReportShared: on a node of a cluster (Env.Shared) the
// stage records its evaluations as on one node, but reports only the
// days the gateway hands it in ClusterDaysDir (every node's records),
// once, and marks each .sent for the gateway.
func TestAggregateReportShared(t *testing.T) {
	dir := t.TempDir()
	now := time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)
	srv := dnstest.NewServer(t, reportZone)
	f, err := build(stages.Env{DNSServers: []string{srv.Addr()}, DataDir: dir, Hostname: "mx.example.test", Shared: true}, stages.JSONConfig([]byte(
		`{"reports": true, "report_from": "dmarc-reports@example.test", "org_name": "Example Corp", "cache_size": 0}`)),
		func() time.Time { return now }, func() int { return 0 })
	if err != nil {
		t.Fatal(err)
	}
	tx := msg("a@example.com", spf("pass", "example.com"))
	tx.Client.Addr = netip.MustParseAddr("192.0.2.1")
	if _, err := f.Run(context.Background(), stages.Data, tx); err != nil {
		t.Fatal(err)
	}
	own := filepath.Join(dir, RecordsDir, "2026-12-05.jsonl")
	line, err := os.ReadFile(own)
	if err != nil {
		t.Fatalf("the evaluation is not recorded where the gateway collects it: %v", err)
	}
	if at, domain, ok := ParseRow(bytes.TrimSpace(line)); !ok || domain != "example.com" || !at.Equal(now) {
		t.Fatalf("ParseRow(%s) = %v, %q, %v", line, at, domain, ok)
	}

	rep := f.reporter.(*Reporter)
	// The day is over, but its own records are the gateway's to collect:
	// nothing is reported from them.
	if err := rep.SendDue(context.Background(), now.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if p := pickups(t, dir); len(p) != 0 {
		t.Fatalf("a node of a cluster reported its own records: %v", p)
	}
	// The gateway hands over the day with another node's evaluation too.
	other := bytes.Replace(line, []byte(`"192.0.2.1"`), []byte(`"192.0.2.2"`), 1)
	day := filepath.Join(dir, ClusterDaysDir, "2026-12-05.jsonl")
	if err := os.WriteFile(day, append(line, other...), 0o640); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := rep.SendDue(context.Background(), now.Add(24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	p := pickups(t, dir)
	if len(p) != 1 {
		t.Fatalf("%d reports handed over, want 1: %v", len(p), p)
	}
	_, m := readPickup(t, p[0])
	doc := string(attachment(t, m, "example.test!example.com!1796428800!1796515199.xml.gz"))
	if !strings.Contains(doc, "<source_ip>192.0.2.1</source_ip>") || !strings.Contains(doc, "<source_ip>192.0.2.2</source_ip>") {
		t.Errorf("the report lacks a node's record:\n%s", doc)
	}
	if _, err := os.Stat(day + ".sent"); err != nil {
		t.Errorf("the reported day is not marked .sent: %v", err)
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("the node's own records were touched: %v", err)
	}
}
