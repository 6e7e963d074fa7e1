package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// chain is the configured stages, each a plugin process, and the pipeline
// that runs them.
type chain struct {
	plugins  []*host.Plugin
	pipeline *pipeline.Pipeline
}

// newChain starts one plugin process per [[stage]] and builds the pipeline.
// A stage that cannot start is a configuration error: the gateway does not
// start with a chain other than the one the admin wrote.
func newChain(ctx context.Context, cfg *policy.Config, opts Options, reg prometheus.Registerer) (*chain, error) {
	ch := &chain{}
	var specs []pipeline.StageSpec
	for i, sc := range cfg.Stages {
		p, err := startStage(ctx, cfg, i, opts, reg)
		if err != nil {
			ch.Close()
			return nil, err
		}
		ch.plugins = append(ch.plugins, p)
		onErr, err := pipeline.ParseOnError(sc.OnError)
		if err != nil {
			ch.Close()
			return nil, fmt.Errorf("%s: stage[%d].on_error: %w", cfg.Position(fmt.Sprintf("stage.%d.on_error", i)), i, err)
		}
		specs = append(specs, pipeline.StageSpec{Stage: p, OnError: onErr, Timeout: time.Duration(sc.Timeout)})
	}
	pl, err := pipeline.New(specs, cfg.Policy, pipeline.Options{Logger: opts.Logger, Registerer: reg})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	ch.pipeline = pl
	return ch, nil
}

// startStage starts the plugin process of stage i.
func startStage(ctx context.Context, cfg *policy.Config, i int, opts Options, reg prometheus.Registerer) (*host.Plugin, error) {
	sc := cfg.Stages[i]
	where := func(key string) string { return cfg.Position(fmt.Sprintf("stage.%d.%s", i, key)) }
	var cmd []string
	switch {
	case sc.Kind == "plugin":
		cmd = []string{sc.Path}
	case opts.PluginCommand != nil:
		cmd = opts.PluginCommand(sc.Kind)
	default:
		return nil, fmt.Errorf("%s: stage %q: no way to start built-in kind %q", where("kind"), sc.Name, sc.Kind)
	}
	conf, err := cfg.StageConfigJSON(i)
	if err != nil {
		return nil, fmt.Errorf("%s: stage %q: %w", where("config"), sc.Name, err)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := host.Start(ctx, host.Spec{
		Name:   sc.Name,
		Cmd:    cmd,
		SHA256: sc.SHA256,
		Config: conf,
		Env: stages.Env{
			Hostname:   cfg.Hostname,
			DNSServers: cfg.DNS.Servers,
			DataDir:    cfg.DataDir,
		},
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		var ce *host.ConfigError
		if errors.As(err, &ce) && ce.Key != "" {
			return nil, fmt.Errorf("%s: stage[%d].config.%s: %s", where("config."+ce.Key), i, ce.Key, ce.Message)
		}
		return nil, fmt.Errorf("%s: stage %q (kind %s): %w", where("kind"), sc.Name, sc.Kind, err)
	}
	return p, nil
}

// Close stops every plugin process, all at once: each may take a moment
// to exit gracefully.
func (c *chain) Close() {
	var wg sync.WaitGroup
	for _, p := range c.plugins {
		wg.Go(func() { p.Close() })
	}
	wg.Wait()
}

// StageInfo is a configured stage and what its plugin describes.
type StageInfo struct {
	Name    string
	OnError string
	Timeout time.Duration
	Info    stages.Info
}

// DescribeStages starts every stage's plugin with its config, as serve would,
// asks what it is and stops it again. A config a kind refuses is an error
// with the position of the key, so `mailgate check` catches it.
func DescribeStages(ctx context.Context, cfg *policy.Config, opts Options) ([]StageInfo, error) {
	ch, err := newChain(ctx, cfg, opts, nil)
	if err != nil {
		return nil, err
	}
	defer ch.Close()
	var out []StageInfo
	for i, p := range ch.plugins {
		sc := cfg.Stages[i]
		out = append(out, StageInfo{Name: p.Name(), OnError: sc.OnError, Timeout: time.Duration(sc.Timeout), Info: p.Info()})
	}
	return out, nil
}
