package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/mailgate/mailgate/gateway/admin"
	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/gateway/spool"
	"github.com/mailgate/mailgate/gateway/trace"
	"github.com/mailgate/mailgate/policy"
)

// The operator commands. queue, quarantine and reload talk to the running
// gateway over its admin API, so the gateway stays the only writer of its
// data dir; trace only reads the trace files, which is safe next to it.

const queueUsage = `usage: mailgate queue COMMAND [-config FILE] [ID...]

  list             the queued messages, oldest first
  show ID          one message: envelope, each recipient's state and last reply
  retry ID...      deliver now
  hold ID...       stop delivery attempts until release
  release ID...    deliver held messages again
  delete ID...     drop messages without a DSN

Flags come before the IDs.
`

const quarantineUsage = `usage: mailgate quarantine COMMAND [-config FILE] [flags] [ID...]

  list [-from S] [-to S] [-stage NAME] [-older DUR] [-newer DUR]
                   quarantined messages, oldest first
  show [-message] ID
                   envelope, every stage verdict and the reason (or the message)
  release ID...    deliver to the original recipients, once
  delete ID...     delete for good

Flags come before the IDs.
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
		config: fs.String("config", "", "config `FILE` of the running gateway (default: the embedded quickstart config)"),
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
	if cfg.File == "" {
		return "the embedded quickstart config"
	}
	return cfg.File
}

func cmdQueue(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, queueUsage)
		return errUsage
	}
	sub := args[0]
	o := newOpFlags("queue "+sub, stderr, queueUsage)
	if err := o.fs.Parse(args[1:]); err != nil {
		return err
	}
	ids := o.fs.Args()
	ctx := context.Background()
	switch sub {
	case "list":
		c, err := o.client()
		if err != nil {
			return err
		}
		envs, err := c.Queue(ctx)
		if err != nil {
			return err
		}
		if *o.json {
			return printJSON(stdout, envs)
		}
		return printQueue(stdout, envs, time.Now())
	case "show":
		if len(ids) != 1 {
			fmt.Fprint(stderr, queueUsage)
			return errUsage
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
	case "retry", "hold", "release", "delete":
		if len(ids) == 0 {
			fmt.Fprint(stderr, queueUsage)
			return errUsage
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range ids {
			if err := c.QueueOp(ctx, sub, id); err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
				continue
			}
			fmt.Fprintf(stdout, "%s: %s\n", id, pastTense(sub))
		}
		return errors.Join(errs...)
	}
	fmt.Fprintf(stderr, "mailgate queue: unknown command %q\n\n%s", sub, queueUsage)
	return errUsage
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
	fmt.Fprintln(tw, "ID\tAGE\tSIZE\tFROM\tPENDING\tSTATE\tLAST REPLY")
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
		fmt.Fprintf(tw, "%s\t%s\t%d\t<%s>\t%d/%d\t%s\t%s\n", env.ID, now.Sub(env.Received).Round(time.Second),
			env.Size, env.From, pending, len(env.Rcpts), state, last)
	}
	return tw.Flush()
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
	if len(args) == 0 {
		fmt.Fprint(stderr, quarantineUsage)
		return errUsage
	}
	sub := args[0]
	o := newOpFlags("quarantine "+sub, stderr, quarantineUsage)
	var f quarantine.Filter
	var message *bool
	switch sub {
	case "list":
		o.fs.StringVar(&f.From, "from", "", "sender contains `S` (any case)")
		o.fs.StringVar(&f.Rcpt, "to", "", "a recipient contains `S` (any case)")
		o.fs.StringVar(&f.Stage, "stage", "", "stage `NAME` decided, added to the score, or gave a verdict other than continue")
		o.fs.DurationVar(&f.OlderThan, "older", 0, "quarantined at least `DUR` ago (e.g. 24h)")
		o.fs.DurationVar(&f.NewerThan, "newer", 0, "quarantined at most `DUR` ago")
	case "show":
		message = o.fs.Bool("message", false, "print the message itself")
	}
	if err := o.fs.Parse(args[1:]); err != nil {
		return err
	}
	ids := o.fs.Args()
	ctx := context.Background()
	switch sub {
	case "list":
		c, err := o.client()
		if err != nil {
			return err
		}
		recs, err := c.Quarantined(ctx, f)
		if err != nil {
			return err
		}
		if *o.json {
			return printJSON(stdout, recs)
		}
		return printQuarantine(stdout, recs)
	case "show":
		if len(ids) != 1 {
			fmt.Fprint(stderr, quarantineUsage)
			return errUsage
		}
		c, err := o.client()
		if err != nil {
			return err
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
	case "release", "delete":
		if len(ids) == 0 {
			fmt.Fprint(stderr, quarantineUsage)
			return errUsage
		}
		c, err := o.client()
		if err != nil {
			return err
		}
		var errs []error
		for _, id := range ids {
			if sub == "delete" {
				err = c.QuarantineDelete(ctx, id)
				if err == nil {
					fmt.Fprintf(stdout, "%s: deleted\n", id)
				}
			} else {
				var qid string
				qid, err = c.QuarantineRelease(ctx, id)
				if err == nil {
					fmt.Fprintf(stdout, "%s: released, queued as %s\n", id, qid)
				}
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: %w", id, err))
			}
		}
		return errors.Join(errs...)
	}
	fmt.Fprintf(stderr, "mailgate quarantine: unknown command %q\n\n%s", sub, quarantineUsage)
	return errUsage
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
	if err := o.fs.Parse(args); err != nil {
		return err
	}
	if o.fs.NArg() != 1 {
		o.fs.Usage()
		return errUsage
	}
	cfg, err := loadConfig(*o.config)
	if err != nil {
		return err
	}
	id := o.fs.Arg(0)
	evs, err := trace.Find(filepath.Join(cfg.DataDir, "trace"), id)
	if err != nil {
		return err
	}
	if len(evs) == 0 {
		return fmt.Errorf("no trace of %s in %s", id, filepath.Join(cfg.DataDir, "trace"))
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
	if err := o.fs.Parse(args); err != nil {
		return err
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
