package gateway

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/gateway/smtpd"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/policy/ratelimit"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state/sqlstore"
	"github.com/mailgate/mailgate/state/trace"
)

// DryRunInput is one message as a client would send it.
type DryRunInput struct {
	ClientIP netip.Addr
	Helo     string
	From     string
	To       []string
	Message  []byte // the message file; LF line ends are sent as CRLF
}

// DryRunResult is what would happen to the message: `mailgate test` prints it.
type DryRunResult struct {
	Action         string        `json:"action"` // accept, tag, quarantine, discard, tempfail, reject
	Score          float64       `json:"score"`
	Reply          string        `json:"reply"` // what the client would be told
	Phase          string        `json:"phase"` // where the decision was made
	Stage          string        `json:"decided_by,omitempty"`
	Reason         string        `json:"reason,omitempty"`
	Stages         []trace.Stage `json:"stages"`
	HeadersAdded   stages.Header `json:"headers_added,omitempty"` // values unfolded
	HeadersRemoved stages.Header `json:"headers_removed,omitempty"`
	Rcpts          []string      `json:"rcpts,omitempty"` // the recipients after edits
	// Warnings say what the dry run could not do as the gateway does
	// (a store it could not read).
	Warnings []string `json:"warnings,omitempty"`
}

// DryRun runs one message through the SMTP side's path, smtpd's driver
// with the real stage chain, plugins and all, and the recipients' own
// allow- and block-lists, and reports what would
// happen, stopping at the first refused recipient. Delivery is off: spool
// and quarantine are in a temporary directory removed on return, the
// router that takes the message never runs, nothing is traced, and the
// stages keep their state in a copy (copyStageData). Routes
// with verify_rcpts are asked about the recipients, as serve asks them.
// cfg is as policy.Load returns it: validated, and only read here, so a
// running gateway may share it.
func DryRun(ctx context.Context, cfg *policy.Config, opts Options, in DryRunInput) (res *DryRunResult, err error) {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	dir, err := os.MkdirTemp("", "mailgate-test-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	sp, err := spool.Open(filepath.Join(dir, "queue"))
	if err != nil {
		return nil, err
	}
	defer sp.Close()
	quar, err := quarantine.Open(filepath.Join(dir, "quarantine"))
	if err != nil {
		return nil, err
	}
	rt, err := router.New(cfg, sp, opts.Logger)
	if err != nil {
		return nil, err
	}
	// The stages keep their state under a copy of data_dir: they answer
	// from what the gateway's stages learnt, and what they write goes
	// with the copy.
	stageCfg := *cfg
	stageCfg.DataDir = filepath.Join(dir, "data")
	copyStageData(cfg.DataDir, stageCfg.DataDir, opts.Logger)
	lists, closeLists, warning := dryRunLists(ctx, cfg)
	defer closeLists()
	defer func() {
		if res != nil && warning != "" {
			res.Warnings = append(res.Warnings, warning)
		}
	}()
	ch, err := newChain(ctx, &stageCfg, opts, nil, nil, lists, nil)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	// The rate limits as the gateway last saved them, in a copy: the dry
	// run counts against them and writes nothing back.
	limits := ratelimit.Env{Now: opts.RateLimitNow}
	if limits.Now == nil {
		limits.Now = time.Now
	}
	if limits.Store, err = ratelimit.ReadTable(filepath.Join(cfg.DataDir, "ratelimit"), limits.Now()); err != nil {
		opts.Logger.Debug("dry run: rate limits start empty", "err", err)
	}
	d, err := smtpd.NewDriver(smtpd.Options{Config: cfg, Spool: sp, Routes: rt.Routes(), Queue: rt,
		Quarantine: quar, Pipeline: ch.pipeline, Logger: opts.Logger, RateLimits: limits})
	if err != nil {
		return nil, err
	}

	c := d.Connect(stages.Client{Addr: in.ClientIP, Helo: in.Helo}, func() (context.Context, func()) { return ctx, func() {} })
	// A client sends non-ASCII addresses with SMTPUTF8.
	smtputf8 := slices.ContainsFunc(append([]string{in.From}, in.To...), func(a string) bool { return !address.IsASCII(a) })
	t, o := c.Mail(in.From, smtputf8)
	if t == nil {
		return result(o, c.Stages()), nil
	}
	defer t.Abort()
	for _, rc := range in.To {
		if o := t.Rcpt(rc); o.Reply != nil {
			return result(o, append(t.Stages(), o.Event.Stages...)), nil
		}
	}
	// A client sending a file makes its line ends CRLF; a bare CR is
	// for DATA to judge (bare_lf).
	msg := bytes.ReplaceAll(bytes.ReplaceAll(in.Message, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
	o = t.Data(bytes.NewReader(msg))
	res = result(o, t.Stages())
	if o.Reply.Code/100 == 2 {
		sent, err := stages.ParseHeader(bufio.NewReader(bytes.NewReader(msg)))
		if err != nil {
			return nil, fmt.Errorf("parse message header: %w", err)
		}
		tx := t.Transaction()
		res.Rcpts = tx.Rcpts
		res.HeadersAdded = headerDiff(tx.Header, sent)
		res.HeadersRemoved = headerDiff(sent, tx.Header)
	}
	return res, nil
}

// dryRunLists opens the recipients' own allow- and block-lists where the
// gateway keeps them, so that the dry run decides as the SMTP side does
// (policy.user_block, policy.user_allow). The live state.db is opened
// read-only: never written, never migrated. A store not made yet holds
// no entries, and is not made here; one that cannot be read (no
// permission, another schema version) is the warning returned, and the
// dry run goes on without the lists, as the SMTP side does when its store
// fails.
func dryRunLists(ctx context.Context, cfg *policy.Config) (pipeline.UserLists, func(), string) {
	if cfg.Cluster.Postgres != "" {
		// The lists are the cluster's, in PostgreSQL; a state.db left
		// from before the cluster would decide on stale entries.
		return nil, func() {}, "the recipients' allow- and block-lists were not checked: they are in the cluster's PostgreSQL, which mailgate test does not read"
	}
	path := stateFile(cfg)
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return nil, func() {}, ""
	}
	st, err := sqlstore.OpenSQLiteReadOnly(ctx, path, sqlstore.Options{Node: cfg.Hostname})
	if err != nil {
		return nil, func() {}, "the recipients' allow- and block-lists were not checked: " + err.Error()
	}
	return st.Lists(), func() { st.Close() }, ""
}

// copyStageData copies the directories the stages keep under data_dir
// (a greylist's triplets, the day's DMARC evaluations, a plugin's own)
// from one data directory to another; the gateway's own are left out
// (the console's web/ holds its signing secret: never copied). A
// dry run goes on without what cannot be copied.
func copyStageData(from, to string, log *slog.Logger) {
	own := map[string]bool{"queue": true, "quarantine": true, "trace": true, "pickup": true, "ratelimit": true, "pregreet": true, "web": true}
	entries, err := os.ReadDir(from)
	if err != nil {
		log.Debug("dry run: stages start without their state", "err", err)
		return
	}
	for _, e := range entries {
		if e.IsDir() && !own[e.Name()] {
			if err := os.CopyFS(filepath.Join(to, e.Name()), os.DirFS(filepath.Join(from, e.Name()))); err != nil {
				log.Debug("dry run: a stage's state not copied", "dir", e.Name(), "err", err)
			}
		}
	}
}

// result is what o says, as an admin reads it: a decision to deliver is
// "accept".
func result(o smtpd.Outcome, ran []trace.Stage) *DryRunResult {
	e := o.Event
	r := &DryRunResult{Action: e.Action, Score: e.Score, Reply: e.Reply, Phase: o.Phase.String(),
		Stage: e.Stage, Reason: e.Reason, Stages: ran}
	if r.Action == "continue" || r.Action == "" {
		r.Action = "accept"
	}
	return r
}

// headerDiff lists the fields of a that b lacks (counting duplicates),
// unfolded.
func headerDiff(a, b stages.Header) stages.Header {
	left := map[stages.Field]int{}
	for _, f := range b {
		left[f]++
	}
	var out stages.Header
	for _, f := range a {
		if left[f] > 0 {
			left[f]--
			continue
		}
		out = append(out, stages.Field{Name: f.Name, Value: stages.Unfold(f.Value)})
	}
	return out
}
