package gateway

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"time"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/gateway/smtpd"
	"github.com/mailgate/mailgate/gateway/trace"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// DryRunInput is one message as a client would send it.
type DryRunInput struct {
	ClientIP netip.Addr
	Helo     string
	From     string
	To       []string
	Message  []byte // the message as sent in DATA (line ends are made CRLF)
}

// DryRunResult is what would happen to the message: `mailgate test` prints it.
type DryRunResult struct {
	Action         string        `json:"action"` // accept, tag, quarantine, tempfail, reject
	Score          float64       `json:"score"`
	Reply          string        `json:"reply"` // what the client would be told
	Phase          string        `json:"phase"` // where the decision was made
	Stage          string        `json:"decided_by,omitempty"`
	Reason         string        `json:"reason,omitempty"`
	Stages         []trace.Stage `json:"stages"`
	HeadersAdded   []HeaderLine  `json:"headers_added,omitempty"`
	HeadersRemoved []HeaderLine  `json:"headers_removed,omitempty"`
	Rcpts          []string      `json:"rcpts,omitempty"` // the recipients after edits
}

// HeaderLine is one header field.
type HeaderLine struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// DryRun runs one message through the real stage chain — plugin processes
// and all — as the SMTP side would, and reports what would happen. Nothing
// is spooled or delivered.
func DryRun(ctx context.Context, cfg *policy.Config, opts Options, in DryRunInput) (*DryRunResult, error) {
	table, err := router.NewTable(cfg.Routes)
	if err != nil {
		return nil, err
	}
	ch, err := newChain(ctx, cfg, opts, nil, nil)
	if err != nil {
		return nil, err
	}
	defer ch.Close()

	res := &DryRunResult{}
	trusted := slices.ContainsFunc(cfg.Server.Trusted(), func(p netip.Prefix) bool { return p.Contains(in.ClientIP) })
	tx := &stages.Transaction{
		QueueID: "DRYRUN",
		Client:  stages.Client{Addr: in.ClientIP, Helo: in.Helo, Trusted: trusted},
	}
	sess := ch.pipeline.Begin()
	run := func(ph stages.Phase) pipeline.Decision {
		pctx, cancel := context.WithTimeout(ctx, time.Duration(cfg.Server.FilterTimeout))
		defer cancel()
		d := sess.Run(pctx, ph, tx, opts.Logger)
		res.Stages = append(res.Stages, d.Records()...)
		res.Action, res.Score, res.Stage, res.Reason, res.Phase = d.Action.String(), d.Score, d.Stage, d.Reason, ph.String()
		return d
	}
	refused := func(ph stages.Phase, d pipeline.Decision) bool {
		if d.Action != stages.Reject && d.Action != stages.TempFail {
			return false
		}
		res.Reply = smtpd.Reply(ph, d)
		return true
	}
	// canonical puts an address in the form the SMTP side goes on with,
	// or refuses its syntax as the SMTP side would.
	canonical := func(addr string, ph stages.Phase) (string, bool) {
		canon, reply, why := smtpd.CheckAddress(addr, trusted, ph == stages.Rcpt)
		if reply == "" {
			return canon, true
		}
		res.Action, res.Phase, res.Reason, res.Reply = "reject", ph.String(), why, reply
		return "", false
	}
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail} {
		if ph == stages.Mail && in.From != "" {
			var ok bool
			if tx.From, ok = canonical(in.From, ph); !ok {
				return finish(res), nil
			}
		}
		if d := run(ph); refused(stages.Rcpt, d) {
			return finish(res), nil
		}
	}
	for _, rc := range in.To {
		rc, ok := canonical(rc, stages.Rcpt)
		if !ok {
			return finish(res), nil
		}
		_, domain, _ := address.Split(rc)
		if !table.Relays(domain) && !trusted {
			res.Action, res.Phase, res.Reason, res.Reply = "reject", "rcpt", "relay denied: no route for "+domain, smtpd.RelayDenied()
			return finish(res), nil
		}
		tx.Rcpts = append(tx.Rcpts, rc)
		if d := run(stages.Rcpt); refused(stages.Rcpt, d) {
			return finish(res), nil
		}
	}
	header, body, err := splitMessage(in.Message)
	if err != nil {
		return nil, err
	}
	tx.Header, tx.Body = header, stages.BytesBody(body)
	d := run(stages.Data)
	if refused(stages.Data, d) {
		return finish(res), nil
	}
	res.Rcpts = tx.Rcpts
	res.HeadersAdded = headerDiff(tx.Header, header)
	res.HeadersRemoved = headerDiff(header, tx.Header)
	if len(tx.Rcpts) == 0 {
		res.Action, res.Reply = "discard", "250 2.0.0 Ok"
		return res, nil
	}
	res.Reply = "250 2.0.0 Ok: queued as DRYRUN"
	return finish(res), nil
}

// finish names a decision to deliver "accept", as an admin reads it.
func finish(r *DryRunResult) *DryRunResult {
	if r.Action == "continue" || r.Action == "" {
		r.Action = "accept"
	}
	return r
}

// splitMessage parses a message file, making every line end CRLF as the
// SMTP side would.
func splitMessage(msg []byte) (stages.Header, []byte, error) {
	msg = bytes.ReplaceAll(msg, []byte("\r\n"), []byte("\n"))
	msg = bytes.ReplaceAll(msg, []byte("\n"), []byte("\r\n"))
	br := bufio.NewReader(bytes.NewReader(msg))
	h, err := stages.ParseHeader(br)
	if err != nil {
		return nil, nil, fmt.Errorf("parse message header: %w", err)
	}
	body, err := io.ReadAll(br)
	return h, body, err
}

// headerDiff lists the fields of a that b lacks (counting duplicates).
func headerDiff(a, b stages.Header) []HeaderLine {
	left := map[stages.Field]int{}
	for _, f := range b {
		left[f]++
	}
	var out []HeaderLine
	for _, f := range a {
		if left[f] > 0 {
			left[f]--
			continue
		}
		out = append(out, HeaderLine{Name: f.Name, Value: stages.Unfold(f.Value)})
	}
	return out
}
