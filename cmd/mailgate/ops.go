package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state/trace"
)

// The operator commands. queue, quarantine and reload talk to the running
// gateway over its admin API, so the gateway stays the only writer of its
// data dir; trace only reads the trace files, which is safe next to it.

const queueUsage = `usage: mailgate queue COMMAND [flags] [ID... | ALL]

  list             the queued messages, oldest first, with their recipients
  show ID          one message: envelope, each recipient's state and last reply
  flush            try every waiting message now (as postqueue -f)
  retry ID...      deliver now
  hold ID...       stop delivery attempts until release
  release ID...    deliver held messages again
  delete ID...     drop messages without a DSN

list, retry, hold, release and delete also select by -from S, -to S
(a part of the sender or of a recipient, any case), -older DUR and
-newer DUR; ALL selects every message. Flags may come anywhere.
Run "mailgate queue COMMAND -h" for a command's flags.
`

const quarantineUsage = `usage: mailgate quarantine COMMAND [flags] [ID... | ALL]

  list             quarantined messages, oldest first
  show [-message] ID
                   envelope, every stage verdict and the reason (or the message)
  release ID...    deliver to the original recipients, once
  release -rcpt ADDR[,ADDR] ID...
                   deliver to those of them only, once each
  delete ID...     delete for good

list, release and delete also select by -from S, -to S, -stage NAME,
-older DUR and -newer DUR; ALL selects every message (with -rcpt, those
still held for one of its addresses). Flags may come anywhere.
Run "mailgate quarantine COMMAND -h" for a command's flags.
`

// opFlags are the flags every operator command has.
type opFlags struct {
	fs     *flag.FlagSet
	config *string
	json   *bool
}

func newOpFlags(name string, stderr io.Writer, usage string) opFlags {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	return opFlags{
		fs:     fs,
		config: fs.String("config", "", configFlagHelp),
		json:   fs.Bool("json", false, "print JSON"),
	}
}

// client finds the running gateway's admin API from its config.
func (o opFlags) client() (*admin.Client, error) {
	cfg, err := loadConfig(*o.config)
	if err != nil {
		return nil, err
	}
	if cfg.Admin.Listen == "" {
		return nil, fmt.Errorf("%s: admin.listen is off; this command talks to the running gateway through it", configName(cfg))
	}
	return admin.NewClient(cfg.Admin.Listen)
}

func configName(cfg *policy.Config) string {
	if cfg.File == embeddedName {
		return "the embedded quickstart config"
	}
	return cfg.File
}

// subcommand is the subcommand args start with, of a command whose usage
// is usage. No subcommand is a usage error, and help prints usage: done
// says the command ends there, with err.
func subcommand(args []string, usage string, stdout, stderr io.Writer) (sub string, done bool, err error) {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return "", true, errUsage
	}
	if isHelp(args[0]) {
		fmt.Fprint(stdout, usage)
		return "", true, nil
	}
	return args[0], false, nil
}

// isHelp reports whether arg asks for help, which exits 0.
func isHelp(arg string) bool {
	switch arg {
	case "-h", "-help", "--help", "help":
		return true
	}
	return false
}

func cmdQueue(args []string, stdout, stderr io.Writer) error {
	sub, done, err := subcommand(args, queueUsage, stdout, stderr)
	if done {
		return err
	}
	o := newOpFlags("queue "+sub, stderr, queueUsage)
	var sel selection
	switch sub {
	case "list", "retry", "hold", "release", "delete":
		sel.flags(o.fs, false)
	case "show", "flush":
	default:
		fmt.Fprintf(stderr, "mailgate queue: unknown command %q\n\n%s", sub, queueUsage)
		return errUsage
	}
	ids, err := parseAll(o.fs, args[1:])
	if err != nil {
		return err
	}
	ctx := context.Background()
	usage := func() error {
		o.fs.Usage()
		return errUsage
	}
	switch sub {
	case "list":
		if len(ids) > 0 {
			return usage()
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		envs, err := c.Queue(ctx)
		if err != nil {
			return err
		}
		now := time.Now()
		envs = slices.DeleteFunc(envs, func(e *spool.Envelope) bool { return !sel.matchEnvelope(e, now) })
		if *o.json {
			return printJSON(stdout, envs)
		}
		return printQueue(stdout, envs, now)
	case "show":
		if len(ids) != 1 {
			return usage()
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		env, err := c.QueuedMessage(ctx, ids[0])
		if err != nil {
			return err
		}
		if *o.json {
			return printJSON(stdout, env)
		}
		return printEnvelope(stdout, env)
	}
	// flush, retry, hold, release, delete
	op := sub
	if sub == "flush" {
		if len(ids) > 0 {
			return usage()
		}
		// A flush is a retry of everything that waits, held mail excepted
		// (hold means no attempts until release).
		op, ids = "retry", []string{"ALL"}
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	list := func() ([]string, error) {
		envs, err := c.Queue(ctx)
		if err != nil {
			return nil, err
		}
		now := time.Now()
		var ids []string
		for _, e := range envs {
			if sel.matchEnvelope(e, now) && !(sub == "flush" && e.Held) {
				ids = append(ids, e.ID)
			}
		}
		return ids, nil
	}
	return eachID(ids, &sel, list, usage, stdout, func(id string) (string, error) {
		return pastTense(op), c.QueueOp(ctx, op, id)
	})
}

// eachID runs op for every message the arguments pick (the IDs given,
// ALL, or what the selection picks from list; see targets), prints
// "ID: what" for each that went through and returns the errors of the
// others, each with its ID.
func eachID(ids []string, sel *selection, list func() ([]string, error), usage func() error, stdout io.Writer, op func(id string) (string, error)) error {
	ids, err := targets(ids, sel, list)
	if errors.Is(err, errUsage) {
		return usage()
	} else if err != nil {
		return err
	}
	var errs []error
	for _, id := range ids {
		what, err := op(id)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", id, err))
			continue
		}
		fmt.Fprintf(stdout, "%s: %s\n", id, what)
	}
	return errors.Join(errs...)
}

func pastTense(op string) string {
	switch op {
	case "retry":
		return "due now"
	case "hold":
		return "held"
	case "release":
		return "released"
	}
	return op + "d"
}

func printQueue(w io.Writer, envs []*spool.Envelope, now time.Time) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tFROM\tTO\tPENDING\tSTATE\tLAST REPLY")
	for _, env := range envs {
		pending, last := 0, ""
		for _, rc := range env.Rcpts {
			if rc.Status == spool.Pending {
				pending++
				if rc.LastReply != "" {
					last = rc.LastReply
				}
			}
		}
		state := "queued"
		switch {
		case env.Held:
			state = "held"
		case env.Attempts > 0 && !env.NextAttempt.IsZero():
			state = "retry in " + env.NextAttempt.Sub(now).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t<%s>\t%s\t%d/%d\t%s\t%s\n", env.ID, now.Sub(env.Received).Round(time.Second),
			env.Size, env.From, rcptsColumn(env.Rcpts), pending, len(env.Rcpts), state, last)
	}
	return tw.Flush()
}

// rcptsColumn lists the recipients still pending, or all when none is,
// the first three in full and then a count, so the table stays a table.
func rcptsColumn(rcpts []spool.Recipient) string {
	var pending, all []string
	for _, rc := range rcpts {
		all = append(all, rc.Addr)
		if rc.Status == spool.Pending {
			pending = append(pending, rc.Addr)
		}
	}
	if len(pending) > 0 {
		all = pending
	}
	if len(all) > 3 {
		return strings.Join(all[:3], ",") + fmt.Sprintf(",+%d", len(all)-3)
	}
	return strings.Join(all, ",")
}

func printEnvelope(w io.Writer, env *spool.Envelope) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", env.ID)
	fmt.Fprintf(tw, "message-id:\t%s\n", env.MessageID)
	fmt.Fprintf(tw, "from:\t<%s>\n", env.From)
	fmt.Fprintf(tw, "received:\t%s from %s [%s]\n", env.Received.Format(time.RFC3339), env.ClientHelo, env.ClientAddr)
	fmt.Fprintf(tw, "size:\t%d\n", env.Size)
	fmt.Fprintf(tw, "attempts:\t%d\n", env.Attempts)
	if !env.NextAttempt.IsZero() {
		fmt.Fprintf(tw, "next attempt:\t%s\n", env.NextAttempt.Format(time.RFC3339))
	}
	fmt.Fprintf(tw, "held:\t%v\n", env.Held)
	for _, rc := range env.Rcpts {
		fmt.Fprintf(tw, "to:\t<%s> %s, %d attempts", rc.Addr, rc.Status, rc.Attempts)
		if rc.LastReply != "" {
			fmt.Fprintf(tw, ", %s said %q", rc.LastHost, rc.LastReply)
		}
		fmt.Fprintln(tw)
	}
	return tw.Flush()
}

func cmdQuarantine(args []string, stdout, stderr io.Writer) error {
	sub, done, err := subcommand(args, quarantineUsage, stdout, stderr)
	if done {
		return err
	}
	o := newOpFlags("quarantine "+sub, stderr, quarantineUsage)
	var sel selection
	var message *bool
	var rcpts []string // release -rcpt
	switch sub {
	case "list", "release", "delete":
		sel.flags(o.fs, true)
		if sub == "release" {
			o.fs.Func("rcpt", "release to these recipients of the message only: `ADDR[,ADDR]` (may be repeated)", func(v string) error {
				n := len(rcpts)
				for _, a := range strings.Split(v, ",") {
					if a = strings.TrimSpace(a); a != "" {
						rcpts = append(rcpts, a)
					}
				}
				if len(rcpts) == n {
					// An empty variable must not become "every recipient".
					return errors.New("no address")
				}
				return nil
			})
		}
	case "show":
		message = o.fs.Bool("message", false, "print the message itself")
	default:
		fmt.Fprintf(stderr, "mailgate quarantine: unknown command %q\n\n%s", sub, quarantineUsage)
		return errUsage
	}
	ids, err := parseAll(o.fs, args[1:])
	if err != nil {
		return err
	}
	ctx := context.Background()
	usage := func() error {
		o.fs.Usage()
		return errUsage
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	switch sub {
	case "list":
		if len(ids) > 0 {
			return usage()
		}
		recs, err := c.Quarantined(ctx, sel.Filter)
		if err != nil {
			return err
		}
		if *o.json {
			return printJSON(stdout, recs)
		}
		return printQuarantine(stdout, recs)
	case "show":
		if len(ids) != 1 {
			return usage()
		}
		if *message {
			return c.QuarantineMessage(ctx, ids[0], stdout)
		}
		rec, err := c.QuarantineRecord(ctx, ids[0])
		if err != nil {
			return err
		}
		if *o.json {
			return printJSON(stdout, rec)
		}
		return printRecord(stdout, rec)
	}
	// release, delete
	pending := map[string][]string{} // with -rcpt, what a selection releases of each message
	list := func() ([]string, error) {
		recs, err := c.Quarantined(ctx, sel.Filter)
		if err != nil {
			return nil, err
		}
		var ids []string
		for _, r := range recs {
			// ALL releases what was not released yet: a second release
			// of one message is refused, and would fail the whole run.
			// With -rcpt, the same for those recipients.
			switch {
			case sub == "delete" || r.Released == "" && len(rcpts) == 0:
				ids = append(ids, r.ID)
			case r.Released == "":
				for _, a := range r.Pending() {
					if slices.ContainsFunc(rcpts, func(b string) bool { return address.Equal(a, b) }) {
						pending[r.ID] = append(pending[r.ID], a)
					}
				}
				if pending[r.ID] != nil {
					ids = append(ids, r.ID)
				}
			}
		}
		return ids, nil
	}
	return eachID(ids, &sel, list, usage, stdout, func(id string) (string, error) {
		if sub == "delete" {
			return "deleted", c.QuarantineDelete(ctx, id)
		}
		to := rcpts
		if p, ok := pending[id]; ok {
			to = p
		}
		qid, err := c.QuarantineRelease(ctx, id, to...)
		if len(to) > 0 {
			return "released to " + strings.Join(to, ", ") + ", queued as " + qid, err
		}
		return "released, queued as " + qid, err
	})
}

func printQuarantine(w io.Writer, recs []*quarantine.Record) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tQUARANTINED\tFROM\tTO\tSCORE\tSTAGE\tREASON\tRELEASED")
	for _, r := range recs {
		stage := r.Stage
		if stage == "" {
			stage = "-"
		}
		released := r.Released
		if released == "" {
			released = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t<%s>\t%s\t%g\t%s\t%s\t%s\n", r.ID, r.Time.Format(time.RFC3339), r.From,
			strings.Join(r.Rcpts, ","), r.Score, stage, r.Reason, released)
	}
	return tw.Flush()
}

func printRecord(w io.Writer, r *quarantine.Record) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "id:\t%s\n", r.ID)
	fmt.Fprintf(tw, "message-id:\t%s\n", r.MessageID)
	fmt.Fprintf(tw, "from:\t<%s>\n", r.From)
	for _, rc := range r.Rcpts {
		fmt.Fprintf(tw, "to:\t<%s>\n", rc)
	}
	fmt.Fprintf(tw, "client:\t%s [%s]\n", r.ClientHelo, r.ClientAddr)
	fmt.Fprintf(tw, "quarantined:\t%s\n", r.Time.Format(time.RFC3339))
	fmt.Fprintf(tw, "size:\t%d\n", r.Size)
	fmt.Fprintf(tw, "score:\t%g\n", r.Score)
	if r.Stage != "" {
		fmt.Fprintf(tw, "stage:\t%s\n", r.Stage)
	}
	fmt.Fprintf(tw, "reason:\t%s\n", r.Reason)
	if r.Policy != "" {
		fmt.Fprintf(tw, "policy:\t%s\n", r.Policy)
	}
	for _, rel := range r.Releases {
		fmt.Fprintf(tw, "released to:\t%s at %s as %s\n", strings.Join(rel.Rcpts, ", "), rel.At.Format(time.RFC3339), rel.QueueID)
	}
	if r.Released != "" {
		fmt.Fprintf(tw, "released:\t%s as %s\n", r.ReleasedAt.Format(time.RFC3339), r.Released)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(w, "verdicts:")
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "  STAGE\tKIND\tPHASE\tACTION\tSCORE\tMS\tRESULT\tREASON")
	for _, v := range r.Verdicts {
		reason := v.Reason
		if v.Error != "" {
			reason += ": " + v.Error
		}
		fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%g\t%.1f\t%s\t%s\n", v.Name, v.Kind, v.Phase, v.Action, v.Score, v.DurationMS, v.Result, reason)
	}
	return tw.Flush()
}

func cmdTrace(args []string, stdout, stderr io.Writer) error {
	o := newOpFlags("trace", stderr, "usage: mailgate trace [-config FILE] [-json] QUEUE-ID|MESSAGE-ID\n")
	args, err := parseAll(o.fs, args)
	if err != nil {
		return err
	}
	if len(args) != 1 {
		o.fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*o.config)
	if err != nil {
		return err
	}
	id := args[0]
	where := filepath.Join(cfg.DataDir, "trace")
	evs, err := trace.Find(where, id)
	if err != nil {
		return err
	}
	// In a cluster, every node's traces; this node's own last second,
	// not shipped yet, from its files.
	if cfg.Cluster.Postgres != "" {
		where = "the cluster's PostgreSQL or " + where
		shared, err := findShared(cfg, id)
		if err != nil {
			fmt.Fprintf(stderr, "mailgate trace: %v; showing this node's own traces only\n", err)
		}
		evs = trace.Merge(shared, evs)
	}
	if len(evs) == 0 {
		return fmt.Errorf("no trace of %s in %s", id, where)
	}
	if *o.json {
		enc := json.NewEncoder(stdout)
		for _, e := range evs {
			if err := enc.Encode(e); err != nil {
				return err
			}
		}
		return nil
	}
	return trace.Print(stdout, evs)
}

func cmdReload(args []string, stdout, stderr io.Writer) error {
	o := newOpFlags("reload", stderr, "usage: mailgate reload [-config FILE]\n\nThe running gateway re-reads its config file, as on SIGHUP.\n")
	if args, err := parseAll(o.fs, args); err != nil {
		return err
	} else if len(args) > 0 {
		o.fs.Usage()
		return errUsage
	}
	c, err := o.client()
	if err != nil {
		return err
	}
	if err := c.Reload(context.Background()); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "reloaded")
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
