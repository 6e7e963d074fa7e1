package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"

	"github.com/mailgate/mailgate/gateway"
)

// listFlag collects a repeated flag.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(v string) error { *l = append(*l, v); return nil }

// cmdTest is the dry run: one message through the SMTP side's transaction
// driver, plugins and all, delivering nothing (gateway.DryRun). It answers
// "what would happen to this mail?"
func cmdTest(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", configFlagHelp)
	ip := fs.String("client-ip", "127.0.0.1", "the connecting client's `IP`")
	helo := fs.String("helo", "client.example", "the client's HELO `NAME`")
	from := fs.String("from", "", "envelope sender `ADDR` (empty: the null sender)")
	var to listFlag
	fs.Var(&to, "to", "envelope recipient `ADDR` (repeat for several)")
	asJSON := fs.Bool("json", false, "print one JSON object")
	verbose := fs.Bool("v", false, "log what the stages do to stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mailgate test [-config FILE] -client-ip IP -helo NAME -from ADDR -to ADDR [-json] MSG.eml")
		fs.PrintDefaults()
	}
	args, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(args) != 1 || len(to) == 0 {
		fs.Usage()
		return errUsage
	}
	addr, err := netip.ParseAddr(*ip)
	if err != nil {
		return fmt.Errorf("-client-ip: %w", err)
	}
	msg, err := os.ReadFile(args[0])
	if err != nil {
		return err
	}
	cfg, err := loadChecked(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	log := slog.New(slog.DiscardHandler)
	if *verbose {
		log = newLogger(cfg, stderr)
	}
	res, err := gateway.DryRun(context.Background(), cfg, gateway.Options{Logger: log, PluginCommand: pluginCommand},
		gateway.DryRunInput{ClientIP: addr.Unmap(), Helo: *helo, From: *from, To: to, Message: msg})
	if err != nil {
		return configError(err, stderr)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(res)
	}
	printDryRun(stdout, res)
	return nil
}

func printDryRun(w io.Writer, r *gateway.DryRunResult) {
	fmt.Fprintf(w, "action: %s (score %.2f, decided at %s", r.Action, r.Score, r.Phase)
	if r.Stage != "" {
		fmt.Fprintf(w, " by %s", r.Stage)
	}
	fmt.Fprintln(w, ")")
	fmt.Fprintf(w, "reply:  %s\n", r.Reply)
	if r.Reason != "" {
		fmt.Fprintf(w, "reason: %s\n", r.Reason)
	}
	if len(r.Stages) > 0 {
		fmt.Fprintln(w)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "STAGE\tKIND\tPHASE\tACTION\tSCORE\tRESULT\tMS\tREASON")
		for _, s := range r.Stages {
			reason := s.Reason
			if s.Error != "" {
				reason = "error: " + s.Error
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%.2f\t%s\t%.1f\t%s\n", s.Name, s.Kind, s.Phase, s.Action, s.Score, s.Result, s.DurationMS, reason)
		}
		tw.Flush()
	}
	for _, h := range r.HeadersAdded {
		fmt.Fprintf(w, "+ %s: %s\n", h.Name, h.Value)
	}
	for _, h := range r.HeadersRemoved {
		fmt.Fprintf(w, "- %s: %s\n", h.Name, h.Value)
	}
	for _, warning := range r.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warning)
	}
}
