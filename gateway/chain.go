package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
)

// chain is the configured stages, each a plugin process, and the pipeline
// that runs them. A reload builds a new chain that shares the plugins
// whose configuration did not change.
type chain struct {
	plugins  []*plugin
	pipeline *pipeline.Pipeline
	once     sync.Once
}

// plugin is a stage's plugin process, shared by the chains that use it.
type plugin struct {
	*host.Plugin
	key  string // the stage's name and what it was started with
	refs atomic.Int32
}

// newChain starts one plugin process per [[stage]] and builds the pipeline;
// reg (plugin restarts) and m (per-stage metrics) may be nil.
// A stage that old (may be nil) runs under the same name with the very
// same kind, executable, config and environment is taken over from old
// instead of started again. A stage that cannot start is a configuration
// error: the gateway does not start with a chain other than the one the
// admin wrote.
func newChain(ctx context.Context, cfg *policy.Config, opts Options, reg prometheus.Registerer, m *pipeline.Metrics, lists pipeline.UserLists, old *chain) (*chain, error) {
	ch := &chain{}
	running := map[string]*plugin{}
	if old != nil {
		for _, p := range old.plugins {
			running[p.key] = p
		}
	}
	var specs []pipeline.StageSpec
	started := map[int]*host.Plugin{} // by stage, a process group's all at once
	for i, sc := range cfg.Stages {
		key, err := pluginKey(cfg, i)
		if err != nil {
			ch.Close()
			return nil, err
		}
		p := running[key]
		if p == nil && started[i] == nil {
			if err := startStages(ctx, cfg, i, opts, reg, started); err != nil {
				ch.Close()
				for _, hp := range started {
					hp.Close()
				}
				return nil, err
			}
		}
		if p == nil {
			p = &plugin{Plugin: started[i], key: key}
			delete(started, i)
		}
		p.refs.Add(1)
		ch.plugins = append(ch.plugins, p)
		specs = append(specs, pipeline.StageSpec{Stage: p.Plugin, OnError: sc.OnError, Timeout: time.Duration(sc.Timeout), Results: sc.ResultActions()})
	}
	// Only now are the result words of every stage known, plugins' too.
	if err := cfg.CheckResults(func(i int) (string, []string, bool) {
		info := ch.plugins[i].Info()
		return info.Kind, info.Results, true
	}); err != nil {
		ch.Close()
		return nil, err
	}
	pl, err := pipeline.New(specs, cfg.Policy, pipeline.Options{Logger: opts.Logger, Metrics: m, UserLists: lists})
	if err != nil {
		ch.Close()
		return nil, fmt.Errorf("pipeline: %w", err)
	}
	ch.pipeline = pl
	return ch, nil
}

// pluginKey is a stage's name and everything its plugin process is
// started with: for a stage of a process group, every member's. on_error
// and timeout are not in it: the pipeline applies them.
func pluginKey(cfg *policy.Config, i int) (string, error) {
	var stages []any
	for _, j := range processGroup(cfg, i) {
		sc := cfg.Stages[j]
		conf, err := cfg.StageConfigJSON(j)
		if err != nil {
			return "", err // positioned
		}
		stages = append(stages, []any{sc.Name, sc.Kind, sc.Path, sc.SHA256, json.RawMessage(conf)})
	}
	b, err := json.Marshal([]any{cfg.Stages[i].Name, stages, cfg.Hostname, cfg.DNS.Servers, cfg.DNS.Timeout, cfg.DataDir})
	return string(b), err
}

// processGroup is the stages that share stage i's process, in config
// order: its process group's, or i alone.
func processGroup(cfg *policy.Config, i int) []int {
	group := cfg.Stages[i].Process
	if group == "" || cfg.Stages[i].Kind == "plugin" {
		return []int{i}
	}
	var out []int
	for j, sc := range cfg.Stages {
		if sc.Process == group && sc.Kind != "plugin" {
			out = append(out, j)
		}
	}
	return out
}

// Close stops the plugin processes no other chain uses, all at once: each
// may take a moment to exit gracefully. Only the first call does anything.
func (c *chain) Close() {
	c.once.Do(func() {
		var wg sync.WaitGroup
		for _, p := range c.plugins {
			if p.refs.Add(-1) == 0 {
				wg.Go(func() { p.Close() })
			}
		}
		wg.Wait()
	})
}

// startStages starts the plugin process of stage i, which serves its
// process group's other stages too, and puts their Plugins in started.
func startStages(ctx context.Context, cfg *policy.Config, i int, opts Options, reg prometheus.Registerer, started map[int]*host.Plugin) error {
	group := processGroup(cfg, i)
	if len(group) == 1 {
		p, err := startStage(ctx, cfg, i, opts, reg)
		if err == nil {
			started[i] = p
		}
		return err
	}
	if opts.PluginCommand == nil {
		return cfg.StageError(i, fmt.Sprintf("no way to start built-in kind %q", cfg.Stages[i].Kind), "kind")
	}
	var members []host.Member
	var kinds []string
	for _, j := range group {
		sc := cfg.Stages[j]
		conf, err := cfg.StageConfigJSON(j)
		if err != nil {
			return err // positioned
		}
		members = append(members, host.Member{Name: sc.Name, Kind: sc.Kind, Config: conf})
		if !slices.Contains(kinds, sc.Kind) {
			kinds = append(kinds, sc.Kind)
		}
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ps, err := host.StartGroup(ctx, host.Spec{
		Name:       cfg.Stages[i].Process,
		Cmd:        append(opts.PluginCommand(kinds[0]), kinds[1:]...),
		Env:        cfg.StageEnv(),
		Logger:     log,
		Registerer: reg,
	}, members)
	if err != nil {
		var ce *host.ConfigError
		for _, j := range group {
			if errors.As(err, &ce) && ce.Key != "" && ce.Stage == cfg.Stages[j].Name {
				return cfg.StageError(j, ce.Message, "config", ce.Key)
			}
		}
		return cfg.StageError(i, err.Error(), "process")
	}
	for k, j := range group {
		started[j] = ps[k]
	}
	return nil
}

// startStage starts the plugin process of stage i.
func startStage(ctx context.Context, cfg *policy.Config, i int, opts Options, reg prometheus.Registerer) (*host.Plugin, error) {
	sc := cfg.Stages[i]
	var cmd []string
	switch {
	case sc.Kind == "plugin":
		cmd = []string{sc.Path}
	case opts.PluginCommand != nil:
		cmd = opts.PluginCommand(sc.Kind)
	default:
		return nil, cfg.StageError(i, fmt.Sprintf("no way to start built-in kind %q", sc.Kind), "kind")
	}
	conf, err := cfg.StageConfigJSON(i)
	if err != nil {
		return nil, err // positioned
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	p, err := host.Start(ctx, host.Spec{
		Name:       sc.Name,
		Cmd:        cmd,
		SHA256:     sc.SHA256,
		Config:     conf,
		Env:        cfg.StageEnv(),
		Logger:     log,
		Registerer: reg,
	})
	if err != nil {
		var ce *host.ConfigError
		if errors.As(err, &ce) && ce.Key != "" {
			return nil, cfg.StageError(i, ce.Message, "config", ce.Key)
		}
		key := "kind" // a built-in kind that does not start
		if sc.Kind == "plugin" {
			key = "path" // a plugin executable that does not start
		}
		// The host's errors name the stage already.
		return nil, cfg.StageError(i, err.Error(), key)
	}
	return p, nil
}

// StageInfo is a configured stage and what its plugin describes.
type StageInfo struct {
	Name    string
	OnError string
	Timeout time.Duration
	Info    stages.Info
}

// DescribeStages starts the plugin of every stage that start allows (nil:
// all), with its config, as serve would, asks what it is and stops it
// again. It goes on past a stage that fails, so that `mailgate check`
// reports every error in one run: a config a kind refuses, with the
// position of the key; a plugin that does not start; a result word the
// kind does not declare. The error joins policy.Error values.
func DescribeStages(ctx context.Context, cfg *policy.Config, opts Options, start func(i int) bool) ([]StageInfo, error) {
	var (
		out     []StageInfo
		errs    []error
		info    = map[int]stages.Info{}
		stopped sync.WaitGroup
	)
	// Each plugin may take a moment to exit gracefully: all at once.
	defer stopped.Wait()
	for i, sc := range cfg.Stages {
		if start != nil && !start(i) {
			continue
		}
		p, err := startStage(ctx, cfg, i, opts, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		info[i] = p.Info()
		stopped.Go(func() { p.Close() })
		out = append(out, StageInfo{Name: p.Name(), OnError: sc.OnError, Timeout: time.Duration(sc.Timeout), Info: info[i]})
	}
	var words policy.Errors
	if errors.As(cfg.CheckResults(func(i int) (string, []string, bool) {
		in, ok := info[i]
		return in.Kind, in.Results, ok
	}), &words) {
		for _, e := range words {
			errs = append(errs, e)
		}
	}
	return out, errors.Join(errs...)
}
