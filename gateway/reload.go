package gateway

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

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
// the limits go-smtp holds per server) is refused with "restart needed".
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
	if err := restartNeeded(old, cfg); err != nil {
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

// restartNeeded refuses changes to what the parts fixed at start: the
// data dir, the listeners (and whether they take a PROXY header) and the
// log format, what go-smtp holds for every connection (smtpd.New), the
// router's connection pool and the shared state of a [cluster].
func restartNeeded(old, cfg *policy.Config) error {
	var keys []string
	oldCert, _ := old.WebTLS()
	newCert, _ := cfg.WebTLS()
	for _, k := range []struct {
		key  string
		same bool
	}{
		{"data_dir", old.DataDir == cfg.DataDir},
		{"admin.listen", old.Admin.Listen == cfg.Admin.Listen},
		{"web.listen", old.Web.Listen == cfg.Web.Listen},
		{"web.tls_cert", cfg.Web.Listen == "" || (oldCert == "") == (newCert == "")},
		{"log.format", old.Log.Format == cfg.Log.Format},
		{"hostname", old.Hostname == cfg.Hostname},
		{"server.listen", slices.Equal(old.Server.Listen, cfg.Server.Listen)},
		{"server.max_message_size", old.Server.MaxMessageSize == cfg.Server.MaxMessageSize},
		{"server.max_recipients", old.Server.MaxRecipients == cfg.Server.MaxRecipients},
		{"server.max_line_length", old.Server.MaxLineLength == cfg.Server.MaxLineLength},
		{"server.command_timeout", old.Server.CommandTimeout == cfg.Server.CommandTimeout},
		// Other TLS files are loaded by smtpd's Reload; turning STARTTLS
		// on or off changes what go-smtp offers.
		{"server.tls_cert", (old.Server.TLSCert == "") == (cfg.Server.TLSCert == "")},
		{"server.proxy_protocol", old.Server.ProxyProtocol == cfg.Server.ProxyProtocol},
		{"server.proxy_trusted", slices.Equal(old.Server.ProxyTrusted, cfg.Server.ProxyTrusted)},
		{"delivery.max_connections", old.Delivery.MaxConnections == cfg.Delivery.MaxConnections},
		{"delivery.idle_conn_timeout", old.Delivery.IdleConnTimeout == cfg.Delivery.IdleConnTimeout},
		{"cluster", old.Cluster == cfg.Cluster}, // the engines and the node's name
	} {
		if !k.same {
			keys = append(keys, k.key)
		}
	}
	if len(keys) > 0 {
		return fmt.Errorf("%s changed: restart needed", strings.Join(keys, ", "))
	}
	return nil
}
