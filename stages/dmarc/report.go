package dmarc

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// Reporter keeps the evaluations that aggregate reports are made of
// (RFC 7489 §7.2) in the data dir, and turns each complete day into
// report messages for the gateway to send.
//
// Layout under <data_dir>:
//
//	dmarc/records/<YYYY-MM-DD>.jsonl  the day's evaluations (UTC), one JSON row a line
//	dmarc/cluster/<YYYY-MM-DD>.jsonl  in a cluster (Env.Shared): a day's evaluations of every
//	                                   node, written by the gateway of the node that reports it;
//	                                   .jsonl.sent once reported
//	dmarc/outbox/                      report messages of a day being finished
//	pickup/                            finished messages; the gateway moves them into its spool
type Reporter struct {
	records, outbox, pickup string
	// days is where the days to report are read: records on one node,
	// the cluster's days in a cluster (shared).
	days                    string
	shared                  bool
	from, orgName, hostname string
	dns                     lookuper
	org                     OrgDomainer

	log func(string) // where a failed run is told; nil: nowhere

	mu sync.Mutex // one append at a time; one report run at a time
}

// row is one evaluation as recorded for the report.
type row struct {
	Time         int64        `json:"time"`
	Domain       string       `json:"domain"` // the policy domain: whose report it goes into
	Record       *Record      `json:"record"`
	SourceIP     string       `json:"source_ip"`
	HeaderFrom   string       `json:"header_from"`
	EnvelopeFrom string       `json:"envelope_from,omitempty"`
	EnvelopeTo   string       `json:"envelope_to,omitempty"`
	Disposition  Policy       `json:"disposition"`
	DKIMAligned  bool         `json:"dkim_aligned"`
	SPFAligned   bool         `json:"spf_aligned"`
	Override     string       `json:"override,omitempty"`
	Comment      string       `json:"comment,omitempty"`
	SPF          authResult   `json:"spf"`
	DKIM         []authResult `json:"dkim,omitempty"`
}

func newReporter(env stages.Env, c Config, dns lookuper, org OrgDomainer) (*Reporter, error) {
	if env.DataDir == "" {
		return nil, &stages.ConfigError{Key: "reports", Err: errors.New("needs data_dir: the evaluations are kept there")}
	}
	if _, err := address.Parse(c.ReportFrom); err != nil || c.ReportFrom == "" {
		return nil, &stages.ConfigError{Key: "report_from", Err: fmt.Errorf("unexpected %q; expect the address reports are sent from, such as \"dmarc-reports@example.test\"", c.ReportFrom)}
	}
	if c.OrgName == "" {
		return nil, &stages.ConfigError{Key: "org_name", Err: errors.New("expect the reporting organisation's name, such as \"Example Corp\"")}
	}
	r := &Reporter{
		records:  filepath.Join(env.DataDir, RecordsDir),
		days:     filepath.Join(env.DataDir, RecordsDir),
		shared:   env.Shared,
		outbox:   filepath.Join(env.DataDir, "dmarc", "outbox"),
		pickup:   filepath.Join(env.DataDir, "pickup"),
		from:     c.ReportFrom,
		orgName:  c.OrgName,
		hostname: env.Hostname,
		dns:      dns,
		org:      org,
		log:      func(s string) { fmt.Fprintln(os.Stderr, s) },
	}
	if r.shared {
		r.days = filepath.Join(env.DataDir, ClusterDaysDir)
	}
	for _, d := range []string{r.records, r.days, r.outbox, r.pickup} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return nil, fmt.Errorf("dmarc reports: %w", err)
		}
	}
	return r, nil
}

// Record appends the evaluation to the day's file and syncs it, so that
// it survives a restart or a crash.
func (r *Reporter) Record(ev *Evaluation, tx *stages.Transaction, now time.Time) error {
	rw := row{
		Time: now.Unix(), Domain: ev.PolicyDomain, Record: ev.Record, SourceIP: tx.Client.Addr.Unmap().String(),
		HeaderFrom: ev.HeaderFrom, EnvelopeFrom: address.DomainOf(tx.From), Disposition: ev.Disposition,
		DKIMAligned: ev.DKIMAligned, SPFAligned: ev.SPFAligned, Override: ev.Override, Comment: ev.Comment,
		SPF: ev.SPF, DKIM: ev.DKIM,
	}
	if len(tx.Rcpts) > 0 {
		rw.EnvelopeTo = address.DomainOf(tx.Rcpts[0])
	}
	b, err := json.Marshal(rw)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	f, err := os.OpenFile(filepath.Join(r.records, day(now)+".jsonl"), os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
	if err != nil {
		return err
	}
	// One write of a whole line: appends from two processes never mix.
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// day names the UTC day of t, as the record files are named.
func day(t time.Time) string { return t.UTC().Format(time.DateOnly) }

// Where the evaluations are kept under the data dir, and where a gateway
// of a cluster (Env.Shared) collects them from and hands back the days
// to report, with every node's (README.md: Aggregate reports).
const (
	RecordsDir     = "dmarc/records" // <day>.jsonl: this node's evaluations of the (UTC) day
	ClusterDaysDir = "dmarc/cluster" // <day>.jsonl: a day of every node's, to report; <day>.jsonl.sent once reported
)

// ParseRow returns the time and the policy domain of one line of a
// records file; ok is false for a line that is not a whole row (cut short
// by a crash).
func ParseRow(line []byte) (t time.Time, domain string, ok bool) {
	var rw struct {
		Time   int64  `json:"time"`
		Domain string `json:"domain"`
	}
	if json.Unmarshal(line, &rw) != nil || rw.Domain == "" {
		return time.Time{}, "", false
	}
	return time.Unix(rw.Time, 0).UTC(), rw.Domain, true
}

// ReportsOn reports whether a dmarc stage's config block (as JSON) turns
// aggregate reports on.
func ReportsOn(config []byte) bool {
	var c struct {
		Reports bool `json:"reports"`
	}
	return json.Unmarshal(config, &c) == nil && c.Reports
}
