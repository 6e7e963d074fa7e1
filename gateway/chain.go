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
			group := processGroup(cfg, i)
			ps, err := startStages(ctx, cfg, group, opts, reg)
			if err != nil {
				ch.Close()
				for _, hp := range started {
					hp.Close()
				}
				return nil, err
			}
			for k, j := range group {
				started[j] = ps[k]
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

// startStages starts the plugin process of the stages of group: one
// stage, or a process group (processGroup), whose executable serves each
// member's kind.
func startStages(ctx context.Context, cfg *policy.Config, group []int, opts Options, reg prometheus.Registerer) ([]*host.Plugin, error) {
	var members []host.Member
	var cmd, kinds []string
	for _, j := range group {
		sc := cfg.Stages[j]
		conf, err := cfg.StageConfigJSON(j)
		if err != nil {
			return nil, err // positioned
		}
		members = append(members, host.Member{Name: sc.Name, Kind: sc.Kind, Config: conf})
		switch {
		case sc.Kind == "plugin":
			cmd = []string{sc.Path}
		case opts.PluginCommand == nil:
			return nil, cfg.StageError(j, fmt.Sprintf("no way to start built-in kind %q", sc.Kind), "kind")
		case cmd == nil:
			cmd, kinds = opts.PluginCommand(sc.Kind), []string{sc.Kind}
		case !slices.Contains(kinds, sc.Kind):
			cmd, kinds = append(cmd, sc.Kind), append(kinds, sc.Kind)
		}
	}
	first := cfg.Stages[group[0]]
	spec := host.Spec{Name: first.Name, Cmd: cmd, SHA256: first.SHA256, Config: members[0].Config,
		Env: cfg.StageEnv(), Logger: opts.Logger, Registerer: reg}
	if spec.Logger == nil {
		spec.Logger = slog.New(slog.DiscardHandler)
	}
	var ps []*host.Plugin
	var err error
	if len(group) == 1 {
		var p *host.Plugin
		p, err = host.Start(ctx, spec)
		ps = []*host.Plugin{p}
	} else {
		spec.Name = first.Process
		ps, err = host.StartGroup(ctx, spec, members)
	}
	if err != nil {
		var ce *host.ConfigError
		for _, j := range group {
			if errors.As(err, &ce) && ce.Key != "" && ce.Stage == cfg.Stages[j].Name {
				return nil, cfg.StageError(j, ce.Message, "config", ce.Key)
			}
		}
		key := "kind" // a built-in kind that does not start
		switch {
		case len(group) > 1:
			key = "process"
		case first.Kind == "plugin":
			key = "path" // a plugin executable that does not start
		}
		// The host's errors name the stage already.
		return nil, cfg.StageError(group[0], err.Error(), key)
	}
	return ps, nil
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
		ps, err := startStages(ctx, cfg, []int{i}, opts, nil)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		p := ps[0]
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
