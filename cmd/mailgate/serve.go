package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/examples"
	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, "usage: mailgate serve [-config FILE]")
	file := fs.String("config", "", configFlagHelp)
	if err := parseNone(fs, args); err != nil {
		return err
	}
	cfg, err := loadChecked(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	level := new(slog.LevelVar)
	log := newLeveledLogger(cfg, stderr, level, stderr == io.Writer(os.Stderr) && underJournal(os.Getenv("JOURNAL_STREAM"), os.Stderr))
	opts := gateway.Options{Logger: log, PluginCommand: pluginCommand, LogLevel: level, Version: version, Revision: revision}
	if cfg.File == embeddedName {
		log.Info("no -config given and no "+defaultConfig+": running the embedded quickstart config", "data_dir", cfg.DataDir)
	} else {
		file := cfg.File // -config, or the default path it stood for
		opts.LoadConfig = func() (*policy.Config, error) { return loadChecked(file) }
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	// Under systemd (Type=notify): the service manager hears when mail is
	// taken, reloaded and stopped. Plugin processes have no word to say.
	sd := notifier{socket: os.Getenv("NOTIFY_SOCKET")}
	os.Unsetenv("NOTIFY_SOCKET")
	notify := func(err error) {
		if err != nil {
			log.Warn("service manager not told", "err", err)
		}
	}

	g, err := gateway.New(ctx, cfg, opts)
	if err != nil {
		return configError(err, stderr)
	}
	if err := g.Start(); err != nil {
		return err
	}
	log.Info("mailgate started", "version", version, "hostname", cfg.Hostname)
	status := fmt.Sprintf("taking mail on %v", g.SMTPAddrs())
	notify(sd.ready(status))
	for ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-hup:
			notify(sd.reloading())
			// Reload logs its outcome; a refused config keeps the old one.
			st := status
			if err := g.Reload(ctx); err != nil {
				st = "config reload refused, the running config stays: " + err.Error()
			}
			notify(sd.ready(st))
		}
	}
	notify(sd.stopping())
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.Shutdown(sctx)
}

// embeddedName is the File of the embedded quickstart config.
const embeddedName = "quickstart.toml (embedded)"

// loadConfig reads the config file; for "", defaultConfig when it exists,
// else the embedded quickstart.
func loadConfig(file string) (*policy.Config, error) {
	if file == "" && fileExists(defaultConfig) {
		file = defaultConfig
	}
	if file == "" {
		return policy.Parse(embeddedName, examples.Quickstart())
	}
	return policy.Load(file)
}

// loadChecked is loadConfig for the commands that run the stages (serve,
// reload, test, plugins): it also checks their kinds and the result words
// of the built-in kinds.
func loadChecked(file string) (*policy.Config, error) {
	cfg, err := loadConfig(file)
	if err == nil {
		err = checkStages(cfg)
	}
	if err != nil {
		return nil, err
	}
	return cfg, nil
}

// configError prints an error that names a key of the config file, such
// as a stage that does not start, as check prints it, and returns
// errConfig; it returns other errors for run to print.
func configError(err error, stderr io.Writer) error {
	var one policy.Error
	if !errors.As(err, &one) {
		return err
	}
	fmt.Fprintln(stderr, err)
	return errConfig
}

// collect adds the errors in err, one by one, to errs.
func collect(errs policy.Errors, err error) policy.Errors {
	var one policy.Error
	switch e := err.(type) {
	case nil:
		return errs
	case policy.Errors:
		return append(errs, e...)
	case interface{ Unwrap() []error }:
		for _, e := range e.Unwrap() {
			errs = collect(errs, e)
		}
		return errs
	}
	if errors.As(err, &one) {
		return append(errs, one)
	}
	return append(errs, policy.Error{Msg: err.Error()})
}

// pluginCommand is how the gateway starts a built-in kind: this very binary.
func pluginCommand(kind string) []string {
	exe, err := os.Executable()
	if err != nil {
		exe = os.Args[0]
	}
	return []string{exe, "plugin", kind}
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, "usage: mailgate check [-config FILE]\n\nValidates the config and starts every stage once; exit 1 with positioned errors.")
	file := fs.String("config", "", configFlagHelp)
	if err := parseNone(fs, args); err != nil {
		return err
	}
	name, data := embeddedName, examples.Quickstart()
	if *file == "" && fileExists(defaultConfig) {
		*file = defaultConfig
	}
	if *file != "" {
		b, err := os.ReadFile(*file)
		if err != nil {
			fmt.Fprintln(stderr, "read config:", err)
			return errConfig
		}
		name, data = *file, b
	}
	// Every error in one run: the loader's, the kinds', then each stage's
	// own, from its plugin, for every stage whose entry is sound.
	cfg, err := policy.ParseAll(name, data)
	if cfg == nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	errs := collect(nil, err)
	errs = collect(errs, checkStages(cfg))
	sound := func(i int) bool {
		for _, k := range []string{"name", "kind", "path", "sha256", "config"} {
			for _, e := range errs {
				if e.About(fmt.Sprintf("stage[%d].%s", i, k)) {
					return false
				}
			}
		}
		return true
	}
	// The stages start in a data_dir of their own, removed after: check
	// validates and leaves nothing behind. In the gateway's data_dir, run
	// as root before the service's first start, it made directories
	// (greylist, dmarc, pickup) that the service's own user could not
	// write.
	scratch := *cfg
	if scratch.DataDir, err = os.MkdirTemp("", "mailgate-check-"); err != nil {
		fmt.Fprintln(stderr, "check:", err)
		return errConfig
	}
	defer os.RemoveAll(scratch.DataDir)
	_, err = gateway.DescribeStages(context.Background(), &scratch, gateway.Options{PluginCommand: pluginCommand}, sound)
	errs = collect(errs, err)
	if len(errs) > 0 {
		// In line order, once each: a built-in kind's plugin declares the
		// same result words that were checked before it started.
		slices.SortStableFunc(errs, func(a, b policy.Error) int {
			return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Key, b.Key), cmp.Compare(a.Msg, b.Msg))
		})
		fmt.Fprintln(stderr, slices.Compact(errs))
		return errConfig
	}
	fmt.Fprintf(stdout, "%s: ok (%d routes, %d stages, %d rate limits)\n", name, len(cfg.Routes), len(cfg.Stages), len(cfg.RateLimits))
	return nil
}
