package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/plugins/sdk"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/arc"
	"github.com/mailgate/mailgate/stages/clamav"
	"github.com/mailgate/mailgate/stages/dkim"
	"github.com/mailgate/mailgate/stages/dkimsign"
	"github.com/mailgate/mailgate/stages/dmarc"
	"github.com/mailgate/mailgate/stages/dnsbl"
	"github.com/mailgate/mailgate/stages/filetype"
	"github.com/mailgate/mailgate/stages/greylist"
	"github.com/mailgate/mailgate/stages/headers"
	"github.com/mailgate/mailgate/stages/milter"
	"github.com/mailgate/mailgate/stages/spam"
	"github.com/mailgate/mailgate/stages/spf"
)

// kind is a built-in stage kind: how to build its filter, and the result
// words of its verdicts, known before any plugin runs so that `check`
// refuses a mapping of another word without starting anything.
type kind struct {
	new     stages.Factory
	results func() []string
	// scans: the filter's own work grows with the message (content
	// scanning), so its process keeps Go's default GOMAXPROCS and may use
	// every core; the others run with one (see cmdPlugin).
	scans bool
}

// builtinKinds are the stage kinds this binary serves with `mailgate plugin
// KIND`. It is built on demand rather than kept in a package variable, so
// there is no registry state to share.
func builtinKinds() map[string]kind {
	return map[string]kind{
		"arc":       {new: arc.New, results: arc.Results},
		"clamav":    {new: clamav.New, results: clamav.Results},
		"dkim":      {new: dkim.New, results: dkim.Results},
		"dkim-sign": {new: dkimsign.New, results: dkimsign.Results},
		"dmarc":     {new: dmarc.New, results: dmarc.Results},
		"dnsbl":     {new: dnsbl.New, results: dnsbl.Results},
		"filetype":  {new: filetype.New, results: filetype.Results, scans: true},
		"greylist":  {new: greylist.New, results: greylist.Results},
		"headers":   {new: headers.New, results: headers.Results},
		"milter":    {new: milter.New, results: milter.Results},
		"spam":      {new: spam.New, results: spam.Results, scans: true},
		"spf":       {new: spf.New, results: spf.Results},
	}
}

func kindNames() string {
	var names []string
	for k := range builtinKinds() {
		names = append(names, k)
	}
	names = append(names, "plugin")
	sort.Strings(names)
	return strings.Join(names, ", ")
}

// cmdPlugin serves a built-in kind over the plugin protocol, or several
// (a process group, [[stage]] process), each stage configured with its
// kind. The gateway starts it; a person running it by hand gets
// go-plugin's explanation.
func cmdPlugin(args []string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprintf(stderr, "usage: mailgate plugin KIND... (of %s)\n", kindNames())
		return errUsage
	}
	all, kinds, scans := builtinKinds(), map[string]stages.Factory{}, false
	for _, name := range args {
		k, ok := all[name]
		if !ok {
			return fmt.Errorf("unknown kind %q; expect one of %s", name, kindNames())
		}
		kinds[name], scans = k.new, scans || k.scans
	}
	if !scans && os.Getenv("GOMAXPROCS") == "" {
		// A plugin that mostly waits for the gateway's calls and answers
		// each in microseconds uses a fifth less CPU with one Go
		// processor: with more, the idle ones spin looking for work
		// after every wake-up (BENCHMARKS.md). A GOMAXPROCS the admin
		// set in the gateway's environment is left alone.
		runtime.GOMAXPROCS(1)
	}
	if len(args) == 1 {
		sdk.Serve(kinds[args[0]])
		return nil
	}
	sdk.ServeGroup(kinds)
	return nil
}

// checkStages checks what policy alone cannot, before any plugin runs:
// that every kind exists, and the result words mapped for the built-in
// kinds.
func checkStages(cfg *policy.Config) error {
	words := map[string][]string{}
	for name, k := range builtinKinds() {
		words[name] = k.results()
	}
	return cfg.CheckKinds(words)
}

// cmdPlugins starts each configured stage and prints what it describes.
func cmdPlugins(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plugins", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, "usage: mailgate plugins [-config FILE]")
	file := fs.String("config", "", configFlagHelp)
	if err := parseNone(fs, args); err != nil {
		return err
	}
	cfg, err := loadChecked(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	infos, err := gateway.DescribeStages(context.Background(), cfg, gateway.Options{PluginCommand: pluginCommand}, nil)
	if err != nil {
		return configError(err, stderr)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STAGE\tKIND\tVERSION\tPHASES\tNEEDS\tEDITS\tTIMEOUT\tON_ERROR")
	for _, s := range infos {
		edits := fmt.Sprint(s.Info.Edits)
		if s.Info.Seals {
			edits = "seals" // edits, and runs after every other stage
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Name, s.Info.Kind, s.Info.Version, s.Info.Phases,
			needsString(s.Info.Needs), edits, s.Timeout, s.OnError)
	}
	return tw.Flush()
}

func needsString(n stages.Needs) string {
	var out []string
	for _, x := range []struct {
		n    stages.Needs
		name string
	}{{stages.NeedEnvelope, "envelope"}, {stages.NeedHeader, "header"}, {stages.NeedBody, "body"}, {stages.NeedResults, "results"}} {
		if n&x.n != 0 {
			out = append(out, x.name)
		}
	}
	if len(out) == 0 {
		return "envelope"
	}
	return strings.Join(out, ",")
}
