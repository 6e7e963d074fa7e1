package gateway

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailgate/mailgate/gateway/smtpd"
	"github.com/mailgate/mailgate/policy"
)

// Reload re-reads the config file and applies it: SIGHUP and `mailgate
// reload` end here. The new config is validated and every part it needs
// is built first (plugins are started only for stages whose config
// changed; the others are shared); only then is it applied, all at once.
// A config that fails any of that is refused, logged, and changes
// nothing. Sessions in progress finish under the config they started
// with; their old plugins stop when the last of them ends.
//
// What the running process cannot change (listeners, data_dir, hostname,
// the limits go-smtp holds per server: policy.RestartNeeded) is refused
// with "restart needed".
func (g *Gateway) Reload(ctx context.Context) error {
	g.reloading.Lock()
	defer g.reloading.Unlock()
	cfg, err := g.reload(ctx)
	if err != nil {
		g.log.Error("reload refused; the running config stays", "err", err)
		return fmt.Errorf("reload: %w", err)
	}
	g.log.Info("reloaded", "config", cfg.File, "stages", len(cfg.Stages), "routes", len(cfg.Routes))
	return nil
}

func (g *Gateway) reload(ctx context.Context) (*policy.Config, error) {
	if g.closed {
		return nil, errors.New("the gateway is shutting down")
	}
	if g.opts.LoadConfig == nil {
		return nil, errors.New("the gateway runs without a config file; nothing to re-read")
	}
	cfg, err := g.opts.LoadConfig()
	if err != nil {
		return nil, err
	}
	g.mu.Lock()
	old, oldChain := g.cfg, g.chain
	g.mu.Unlock()
	if err := policy.RestartNeeded(old, cfg); err != nil {
		return nil, err
	}
	ch, err := newChain(ctx, cfg, g.opts, g.reg, g.stageM, g.lists, oldChain)
	if err != nil {
		return nil, err
	}

	// Everything is built and checked: apply.
	if err := g.router.Reload(cfg); err != nil {
		ch.Close()
		return nil, err
	}
	g.mu.Lock()
	g.chains[ch] = true
	g.mu.Unlock()
	retire := func() {
		g.mu.Lock()
		delete(g.chains, oldChain)
		g.mu.Unlock()
		oldChain.Close()
	}
	if err := g.smtp.Reload(smtpd.Update{Config: cfg, Pipeline: ch.pipeline, Routes: g.router.Routes()}, retire); err != nil {
		g.router.Reload(old)
		g.mu.Lock()
		delete(g.chains, ch)
		g.mu.Unlock()
		ch.Close()
		return nil, err
	}
	g.mu.Lock()
	g.cfg, g.chain = cfg, ch
	g.mu.Unlock()
	if g.opts.LogLevel != nil {
		g.opts.LogLevel.UnmarshalText([]byte(cfg.Log.Level)) // validated by policy
	}
	return cfg, nil
}
