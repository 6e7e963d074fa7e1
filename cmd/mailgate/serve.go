package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/examples"
	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
)

func cmdServe(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("config", "", "config `FILE` (default: the embedded quickstart config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		return err
	}
	log := newLogger(cfg, stderr)
	if *file == "" {
		log.Info("no -config given: running the embedded quickstart config", "data_dir", cfg.DataDir)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	g, err := gateway.New(ctx, cfg, gateway.Options{Logger: log, PluginCommand: pluginCommand})
	if err != nil {
		return err
	}
	if err := g.Start(); err != nil {
		return err
	}
	log.Info("mailgate started", "version", version, "hostname", cfg.Hostname)
	<-ctx.Done()
	log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return g.Shutdown(sctx)
}

// loadConfig reads the config file, or the embedded quickstart for "".
func loadConfig(file string) (*policy.Config, error) {
	if file == "" {
		return policy.Parse("quickstart.toml (embedded)", examples.Quickstart())
	}
	return policy.Load(file)
}

func newLogger(cfg *policy.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(cfg.Log.Level)) // validated by policy; "" is info
	opts := &slog.HandlerOptions{Level: level}
	if cfg.Log.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
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
	file := fs.String("config", "", "config `FILE` (default: the embedded quickstart config)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg, err := loadConfig(*file)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	if err := checkStages(cfg); err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	// Each kind validates its own [stage.config]: start them all once.
	if _, err := gateway.DescribeStages(context.Background(), cfg, gateway.Options{PluginCommand: pluginCommand}); err != nil {
		fmt.Fprintln(stderr, err)
		return errConfig
	}
	name := cfg.File
	fmt.Fprintf(stdout, "%s: ok (%d routes, %d stages)\n", name, len(cfg.Routes), len(cfg.Stages))
	return nil
}
