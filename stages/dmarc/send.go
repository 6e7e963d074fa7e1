package dmarc

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/durable"
	"github.com/mailgate/mailgate/stages/resolver"
)

// SendDue turns every complete day (UTC, before now's day) of recorded
// evaluations into report messages, one per reporting domain, and hands
// them to the gateway through the pickup directory. It is what the daily
// run calls; tests call it with the time they want. In a cluster
// (Env.Shared) the days are those the gateway handed this node to report,
// with every node's evaluations (ClusterDaysDir), not its own records.
//
// A report is handed over once even across a crash: a day's messages are
// written into the outbox under names fixed by day and domain (a rerun
// overwrites, never adds), the day's records are removed (in a cluster,
// renamed .sent: the gateway tells by it that the day was reported), and
// only then is each message renamed into pickup/, which moves it exactly
// once. A DNS failure while verifying destinations leaves the day for the
// next run.
func (r *Reporter) SendDue(ctx context.Context, now time.Time) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.flushOutbox(); err != nil {
		return err
	}
	names, err := filepath.Glob(filepath.Join(r.days, "*.jsonl"))
	if err != nil {
		return err
	}
	sort.Strings(names)
	today := day(now)
	var errs []error
	for _, name := range names {
		d := strings.TrimSuffix(filepath.Base(name), ".jsonl")
		if d >= today {
			continue
		}
		if err := r.reportDay(ctx, d, name); err != nil {
			errs = append(errs, fmt.Errorf("dmarc reports of %s: %w", d, err))
			continue
		}
		done := os.Remove
		if r.shared {
			done = func(name string) error { return os.Rename(name, name+".sent") }
		}
		if err := done(name); err != nil {
			errs = append(errs, err)
		}
		if err := r.flushOutbox(); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// sharedPoll is how often a node of a cluster looks for a day the
// gateway handed it to report: a glob of a small directory.
const sharedPoll = 5 * time.Second

// daily runs SendDue at start (a day that ended while the gateway was
// down) and then a few minutes after each UTC midnight, until ctx ends;
// in a cluster, every sharedPoll, as the gateway hands days over when
// every node's records are in. Tests call SendDue with the time they
// choose instead.
func (r *Reporter) daily(ctx context.Context, now func() time.Time) {
	for {
		if err := r.SendDue(ctx, now()); err != nil && r.log != nil {
			r.log("dmarc reports: " + err.Error())
		}
		t := now().UTC()
		next := time.Date(t.Year(), t.Month(), t.Day()+1, 0, 5, 0, 0, time.UTC)
		if r.shared {
			next = t.Add(sharedPoll)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(next.Sub(t)):
		}
	}
}

// flushOutbox moves the finished messages of the outbox into pickup/.
// Both directories are synced: a rename the outbox kept after a power
// loss would hand the report over a second time.
func (r *Reporter) flushOutbox() error {
	files, err := os.ReadDir(r.outbox)
	if err != nil {
		return err
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".eml") {
			continue
		}
		if err := os.Rename(filepath.Join(r.outbox, f.Name()), filepath.Join(r.pickup, f.Name())); err != nil {
			return err
		}
	}
	if err := durable.Sync(r.pickup); err != nil {
		return err
	}
	return durable.Sync(r.outbox)
}

// reportDay writes the day's report messages into the outbox.
func (r *Reporter) reportDay(ctx context.Context, d, file string) error {
	rows, err := readRows(file)
	if err != nil {
		return err
	}
	byDomain := map[string][]row{}
	for _, rw := range rows {
		byDomain[rw.Domain] = append(byDomain[rw.Domain], rw)
	}
	begin, err := time.Parse(time.DateOnly, d)
	if err != nil {
		return err
	}
	for domain, rows := range byDomain {
		last := rows[len(rows)-1].Record
		if last == nil {
			continue
		}
		to, err := r.destinations(ctx, domain, last.RUA)
		if err != nil {
			return err
		}
		if len(to) == 0 {
			continue
		}
		id := reportID(d, domain, r.hostname)
		doc, err := r.feedback(id, domain, begin, rows)
		if err != nil {
			return err
		}
		msg, err := r.message(id, domain, begin, doc, to)
		if err != nil {
			return err
		}
		// §6.4 "!" size: a destination that takes less gets nothing.
		to = slices.DeleteFunc(to, func(u ReportURI) bool { return u.MaxSize > 0 && int64(len(msg)) > u.MaxSize })
		if len(to) == 0 {
			continue
		}
		msg, _ = r.message(id, domain, begin, doc, to)
		if err := r.writeOutbox("dmarc-"+d+"-"+domain+".eml", r.envelope(to), msg); err != nil {
			return err
		}
	}
	return nil
}

func readRows(file string) ([]row, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var rows []row
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var rw row
		if json.Unmarshal(sc.Bytes(), &rw) != nil || rw.Domain == "" {
			// A line cut short by a crash: the rest of the day counts.
			continue
		}
		rows = append(rows, rw)
	}
	return rows, sc.Err()
}

// destinations returns the rua addresses reports may go to: those inside
// the reporting domain's organisation, and those whose domain agrees to
// receive its reports (RFC 7489 §7.1: a TXT record starting v=DMARC1 at
// <domain>._report._dmarc.<destination domain>).
func (r *Reporter) destinations(ctx context.Context, domain string, rua []ReportURI) ([]ReportURI, error) {
	var out []ReportURI
	for _, u := range rua {
		_, ruaDomain, _ := address.Split(u.Address)
		if orgOf(r.org, ruaDomain) == orgOf(r.org, domain) {
			out = append(out, u)
			continue
		}
		a, err := r.dns.Lookup(ctx, domain+"._report._dmarc."+ruaDomain, dns.TypeTXT)
		if errors.Is(err, resolver.ErrTemporary) {
			return nil, err
		}
		ok := false
		for _, rr := range a.RRs {
			if tags := splitTags(strings.Join(resolver.TXTStrings(rr), "")); len(tags) > 0 && strings.EqualFold(tags[0].name, "v") && tags[0].value == "DMARC1" {
				ok = true
			}
		}
		if ok {
			out = append(out, u)
		}
	}
	return out, nil
}

func reportID(d, domain, hostname string) string {
	h := sha256.Sum256([]byte(d + "\x00" + domain + "\x00" + hostname))
	return d + "." + hex.EncodeToString(h[:6])
}

// The report's XML (RFC 7489 Appendix C).
type (
	feedbackXML struct {
		XMLName  xml.Name     `xml:"feedback"`
		Version  string       `xml:"version"`
		Metadata metadataXML  `xml:"report_metadata"`
		Policy   publishedXML `xml:"policy_published"`
		Records  []recordXML  `xml:"record"`
	}
	metadataXML struct {
		OrgName string `xml:"org_name"`
		Email   string `xml:"email"`
		ID      string `xml:"report_id"`
		Begin   int64  `xml:"date_range>begin"`
		End     int64  `xml:"date_range>end"`
	}
	publishedXML struct {
		Domain string `xml:"domain"`
		ADKIM  string `xml:"adkim"`
		ASPF   string `xml:"aspf"`
		P      Policy `xml:"p"`
		SP     Policy `xml:"sp"`
		Pct    int    `xml:"pct"`
		FO     string `xml:"fo"`
	}
	recordXML struct {
		SourceIP    string      `xml:"row>source_ip"`
		Count       int         `xml:"row>count"`
		Disposition Policy      `xml:"row>policy_evaluated>disposition"`
		DKIM        string      `xml:"row>policy_evaluated>dkim"`
		SPF         string      `xml:"row>policy_evaluated>spf"`
		Reasons     []reasonXML `xml:"row>policy_evaluated>reason,omitempty"`
		EnvTo       string      `xml:"identifiers>envelope_to,omitempty"`
		EnvFrom     string      `xml:"identifiers>envelope_from"`
		HeaderFrom  string      `xml:"identifiers>header_from"`
		AuthDKIM    []dkimXML   `xml:"auth_results>dkim"`
		AuthSPF     spfXML      `xml:"auth_results>spf"`
	}
	reasonXML struct {
		Type    string `xml:"type"`
		Comment string `xml:"comment,omitempty"`
	}
	dkimXML struct {
		Domain   string `xml:"domain"`
		Selector string `xml:"selector,omitempty"`
		Result   string `xml:"result"`
	}
	spfXML struct {
		Domain string `xml:"domain"`
		Scope  string `xml:"scope"`
		Result string `xml:"result"`
	}
)

// feedback builds the report document: rows with the same source,
// identifiers, results and disposition are counted together (§7.2).
func (r *Reporter) feedback(id, domain string, begin time.Time, rows []row) ([]byte, error) {
	last := rows[len(rows)-1].Record
	sp := last.Subdomain
	if sp == "" {
		sp = last.Policy
	}
	fb := feedbackXML{
		Version:  "1.0",
		Metadata: metadataXML{OrgName: r.orgName, Email: r.from, ID: id, Begin: begin.Unix(), End: begin.Add(24*time.Hour).Unix() - 1},
		Policy:   publishedXML{Domain: domain, ADKIM: mode(last.StrictDKIM), ASPF: mode(last.StrictSPF), P: last.Policy, SP: sp, Pct: last.Pct, FO: last.FO},
	}
	index := map[string]int{}
	for _, rw := range rows {
		rec := recordXML{
			SourceIP: fullIP(rw.SourceIP), Count: 1, Disposition: rw.Disposition,
			DKIM: passFail(rw.DKIMAligned), SPF: passFail(rw.SPFAligned),
			EnvTo: rw.EnvelopeTo, EnvFrom: rw.EnvelopeFrom, HeaderFrom: rw.HeaderFrom,
			AuthSPF: spfXML{Domain: rw.SPF.Domain, Scope: rw.SPF.Scope, Result: spfWord(rw.SPF.Result)},
		}
		if rec.AuthSPF.Domain == "" {
			// No spf stage ran: the schema wants one SPF result.
			rec.AuthSPF = spfXML{Domain: rw.EnvelopeFrom, Scope: "mfrom", Result: "none"}
		}
		if rec.Disposition == "" {
			rec.Disposition = PolicyNone
		}
		if rw.Override != "" {
			rec.Reasons = []reasonXML{{Type: rw.Override, Comment: rw.Comment}}
		}
		for _, d := range rw.DKIM {
			rec.AuthDKIM = append(rec.AuthDKIM, dkimXML{Domain: d.Domain, Selector: d.Selector, Result: dkimWord(d.Result)})
		}
		key, _ := json.Marshal(rec)
		if i, ok := index[string(key)]; ok {
			fb.Records[i].Count++
			continue
		}
		index[string(key)] = len(fb.Records)
		fb.Records = append(fb.Records, rec)
	}
	b, err := xml.MarshalIndent(fb, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), b...), nil
}

func mode(strict bool) string {
	if strict {
		return "s"
	}
	return "r"
}

func passFail(ok bool) string {
	if ok {
		return "pass"
	}
	return "fail"
}

// spfWord and dkimWord keep the results to the schema's words.
func spfWord(s string) string {
	switch s {
	case "none", "neutral", "pass", "fail", "softfail", "temperror", "permerror":
		return s
	}
	return "none"
}

func dkimWord(s string) string {
	switch s {
	case "none", "pass", "fail", "policy", "neutral", "temperror", "permerror":
		return s
	}
	return "permerror"
}

// fullIP writes an IPv6 address with all eight groups: the schema's
// IPAddress pattern has no "::".
func fullIP(s string) string {
	if !strings.Contains(s, ":") {
		return s
	}
	ip, err := netip.ParseAddr(s)
	if err != nil {
		return s
	}
	b := ip.As16()
	var parts []string
	for i := 0; i < 16; i += 2 {
		parts = append(parts, fmt.Sprintf("%x", uint16(b[i])<<8|uint16(b[i+1])))
	}
	return strings.Join(parts, ":")
}

// message writes the report mail (RFC 7489 §7.2.1.1): the gzipped XML as
// an attachment named receiver!policy-domain!begin!end.xml.gz.
func (r *Reporter) message(id, domain string, begin time.Time, doc []byte, to []ReportURI) ([]byte, error) {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	if _, err := zw.Write(doc); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, err
	}
	_, receiver, _ := address.Split(r.from)
	end := begin.Add(24*time.Hour).Unix() - 1
	file := fmt.Sprintf("%s!%s!%d!%d.xml.gz", receiver, domain, begin.Unix(), end)
	var rcpts []string
	for _, u := range to {
		rcpts = append(rcpts, u.Address)
	}
	boundary := "dmarc-" + id
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\n", r.from)
	fmt.Fprintf(&b, "To: %s\r\n", strings.Join(rcpts, ", "))
	fmt.Fprintf(&b, "Subject: Report Domain: %s Submitter: %s Report-ID: <%s>\r\n", domain, receiver, id)
	fmt.Fprintf(&b, "Date: %s\r\n", begin.Add(24*time.Hour).Format(time.RFC1123Z))
	fmt.Fprintf(&b, "Message-ID: <%s.%s@%s>\r\n", id, domain, receiver)
	b.WriteString("MIME-Version: 1.0\r\n")
	fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=\"%s\"\r\n\r\n", boundary)
	fmt.Fprintf(&b, "--%s\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n", boundary)
	fmt.Fprintf(&b, "DMARC aggregate report for %s from %s, %s (UTC).\r\n\r\n", domain, r.orgName, begin.Format(time.DateOnly))
	fmt.Fprintf(&b, "--%s\r\nContent-Type: application/gzip\r\nContent-Transfer-Encoding: base64\r\n", boundary)
	fmt.Fprintf(&b, "Content-Disposition: attachment; filename=\"%s\"\r\n\r\n", file)
	enc := base64.StdEncoding.EncodeToString(gz.Bytes())
	for len(enc) > 76 {
		b.WriteString(enc[:76] + "\r\n")
		enc = enc[76:]
	}
	b.WriteString(enc + "\r\n")
	fmt.Fprintf(&b, "--%s--\r\n", boundary)
	return b.Bytes(), nil
}

func (r *Reporter) envelope(to []ReportURI) stages.Pickup {
	p := stages.Pickup{From: r.from}
	for _, u := range to {
		p.Rcpts = append(p.Rcpts, u.Address)
	}
	return p
}

// writeOutbox writes a pickup file (stages.Pickup) into the outbox
// atomically: a temporary file, synced, renamed over name.
func (r *Reporter) writeOutbox(name string, env stages.Pickup, msg []byte) error {
	line, err := env.Line()
	if err != nil {
		return err
	}
	return durable.WriteFile(filepath.Join(r.outbox, name), append(line, msg...), "")
}
