package policy

import (
	"fmt"
	"slices"
	"strings"
)

// RestartNeeded refuses the changes from old to cfg that a running
// gateway cannot take, naming every key: what its parts fixed at start,
// the data dir, the listeners (and whether they take a PROXY header or
// speak TLS) and the log format, what go-smtp holds for every connection,
// the router's connection pool and the shared state of a [cluster].
// Everything else a reload applies.
func RestartNeeded(old, cfg *Config) error {
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
		// Other TLS files are loaded at the next handshake; turning STARTTLS
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
