// Package policy owns the configuration an admin writes: the TOML schema,
// loading with positioned errors, validation, defaults, and the thresholds
// that turn a message's verdicts into an action.
package policy

import (
	"net/netip"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// Config is a whole mailgate configuration file.
type Config struct {
	Hostname string        `toml:"hostname"` // the gateway's name: greeting, Received, DSNs
	DataDir  string        `toml:"data_dir"` // spool, quarantine, state
	Server   Server        `toml:"server"`
	DNS      DNS           `toml:"dns"`
	Admin    Admin         `toml:"admin"`
	Delivery Delivery      `toml:"delivery"`
	Routes   []Route       `toml:"route"`
	Stages   []StageConfig `toml:"stage"`
	// RateLimits are the [[ratelimit]] rules, checked at MAIL and RCPT.
	RateLimits []RateLimit `toml:"ratelimit"`
	Policy     Policy      `toml:"policy"`
	Log        Log         `toml:"log"`
	// Quarantine and Trace say how long quarantined messages and message
	// traces are kept.
	Quarantine Retention `toml:"quarantine"`
	Trace      Retention `toml:"trace"`
	// Cluster is the state this node shares with the other nodes of a
	// cluster; its zero value is one node with its state under DataDir.
	Cluster Cluster `toml:"cluster"`
	// Web is the web console, off unless [web] listen is set.
	Web Web `toml:"web"`

	// File is the path the config was read from ("" for the embedded one).
	File string `toml:"-"`
	// src is what the loader keeps of the file: key lines for errors found
	// after loading, and the TOML metadata [stage.config] blocks decode with.
	src *source
}

// Server is the [server] table: the SMTP listener and its limits.
type Server struct {
	Listen              []string        `toml:"listen"`                 // host:port; default ["127.0.0.1:2525"]
	MaxMessageSize      stages.Size     `toml:"max_message_size"`       // default 50MB
	MaxRecipients       int             `toml:"max_recipients"`         // per message; default 1000
	MaxConnections      int             `toml:"max_connections"`        // in total; default 2000
	MaxConnectionsPerIP int             `toml:"max_connections_per_ip"` // default 50
	MaxLineLength       int             `toml:"max_line_length"`        // bytes, commands and DATA lines; default 16384
	MaxHops             int             `toml:"max_hops"`               // Received fields before a loop is assumed; default 50
	CommandTimeout      stages.Duration `toml:"command_timeout"`        // idle time between commands; default 5m (RFC 5321 §4.5.3.2)
	DataTimeout         stages.Duration `toml:"data_timeout"`           // idle time while reading DATA; default 10m
	DataTotalTimeout    stages.Duration `toml:"data_total_timeout"`     // time to read a whole message, all BDAT chunks; default 1h
	FilterTimeout       stages.Duration `toml:"filter_timeout"`         // per-message deadline for data-phase stages; default 60s
	TrustedNetworks     []string        `toml:"trusted_networks"`       // CIDRs that may relay to any domain
	TLSCert             string          `toml:"tls_cert"`               // PEM file; with tls_key enables STARTTLS
	TLSKey              string          `toml:"tls_key"`
	BareLF              string          `toml:"bare_lf"` // "normalize" (default) or "reject"
	// ProxyProtocol puts every listener behind proxies (HAProxy, a load
	// balancer) that open each connection with a PROXY protocol header,
	// v1 or v2: the client's address is the header's. Only the proxies
	// in ProxyTrusted may connect then; a header is required of them.
	ProxyProtocol bool     `toml:"proxy_protocol"`
	ProxyTrusted  []string `toml:"proxy_trusted"` // the proxies: CIDRs or addresses
	// PregreetDelay turns on the pre-greet test (as Postfix's
	// postscreen): the banner waits this long, and a client that talks
	// before it, or pipelines its HELO/EHLO, is refused. 0 (default): off.
	PregreetDelay   stages.Duration `toml:"pregreet_delay"`
	PregreetGoodTTL stages.Duration `toml:"pregreet_good_ttl"` // a passed client is not tested again for this long; default 24h
	PregreetBadTTL  stages.Duration `toml:"pregreet_bad_ttl"`  // a failed one is refused at once for this long; default 1h

	// trusted and proxies are TrustedNetworks and ProxyTrusted parsed
	// once by the loader, so a connection only compares prefixes.
	trusted, proxies []netip.Prefix
}

// DNS is the [dns] table.
type DNS struct {
	Servers []string        `toml:"servers"` // host:port; default: the nameservers of /etc/resolv.conf
	Timeout stages.Duration `toml:"timeout"` // per query; default 5s
}

// Admin is the [admin] table: the local admin listener.
type Admin struct {
	Listen string `toml:"listen"` // /metrics, /healthz and the admin API; default "127.0.0.1:8025"; "" disables
}

// Delivery is the [delivery] table: how queued mail is relayed.
type Delivery struct {
	MaxAge          stages.Duration `toml:"max_age"`           // give up and bounce after this; default 120h (5 days)
	RetryMin        stages.Duration `toml:"retry_min"`         // first retry delay; default 1m
	RetryMax        stages.Duration `toml:"retry_max"`         // backoff ceiling; default 1h
	ConnectTimeout  stages.Duration `toml:"connect_timeout"`   // default 30s
	CommandTimeout  stages.Duration `toml:"command_timeout"`   // per SMTP command to the next hop; default 5m
	MaxConnections  int             `toml:"max_connections"`   // concurrent connections per destination; default 20
	BounceFrom      string          `toml:"bounce_from"`       // From of DSNs; default "MAILER-DAEMON@<hostname>"
	HeloName        string          `toml:"helo_name"`         // default: hostname
	IdleConnTimeout stages.Duration `toml:"idle_conn_timeout"` // keep an idle connection for reuse this long; default 30s
}

// Route is one [[route]]: where mail for some recipient domains goes.
type Route struct {
	// Domains are exact names ("example.test"), wildcards for subdomains
	// ("*.example.test") or "*" for every domain (a default route).
	Domains []string `toml:"domains"`
	Servers []string `toml:"servers"` // host:port tried in order; or
	MX      bool     `toml:"mx"`      // look up MX records of the recipient domain
	// Maildir delivers into a local Maildir instead of over SMTP; the
	// embedded quickstart config uses it so a first run needs no other server.
	Maildir string `toml:"maildir"`
	TLS     string `toml:"tls"` // "opportunistic" (default), "required" or "none"
	// TLSSkipVerify accepts any certificate from the next hop (internal
	// servers with self-signed certificates).
	TLSSkipVerify bool `toml:"tls_skip_verify"`
	// VerifyRcpts asks the route's servers at RCPT whether they take the
	// recipient (MAIL FROM:<>, RCPT TO, RSET) and refuses those they
	// refuse for good (550 5.1.1), so that no bounce goes to a forged
	// sender later. Servers routes only.
	VerifyRcpts bool `toml:"verify_rcpts"`
	// VerifyRcptsUnverified is what a recipient gets that the servers
	// could not verify (a 4xx, no answer): "tempfail" (default with
	// verify_rcpts, 450 4.1.1, as Postfix's
	// unverified_recipient_tempfail_action) or "accept" (fail open: the
	// mail is queued, and may bounce later).
	VerifyRcptsUnverified string `toml:"verify_rcpts_unverified"`
}

// StageConfig is one [[stage]] of the filter chain.
type StageConfig struct {
	Name    string          `toml:"name"`
	Kind    string          `toml:"kind"`
	OnError string          `toml:"on_error"` // tempfail (default), accept, reject, quarantine or skip
	Timeout stages.Duration `toml:"timeout"`  // per call; default 10s
	// Path and SHA256 locate the executable of kind = "plugin".
	Path   string `toml:"path"`
	SHA256 string `toml:"sha256"`
	// Process names the process group of a built-in kind: the stages
	// with the same process share one plugin process; "" runs the stage
	// in a process of its own.
	Process string `toml:"process"`
	// Config is the [stage.config] block, decoded by the kind.
	Config toml.Primitive `toml:"config"`
	// Results maps the stage's result words to actions ([stage.results]
	// fail = "reject"): the pipeline uses that action instead of the
	// stage's own.
	Results map[string]string `toml:"results"`

	index int // position in Stages, for error positions
}

// RateLimit is one [[ratelimit]]: how fast mail may come, counted under
// one key of the envelope (README.md: Rate limits; package
// policy/ratelimit holds rules to it).
type RateLimit struct {
	Name string `toml:"name"` // logs, traces and the rule label of the metrics
	// Key is what is counted: client_ip, client_net, sender,
	// sender_domain, recipient or auth.
	Key string `toml:"key"`
	// Rate events pass per Per, once a burst is spent.
	Rate int             `toml:"rate"`
	Per  stages.Duration `toml:"per"`
	// Burst is how many events pass at once; default Rate.
	Burst int `toml:"burst"`
	// Count is "message" (default: one per MAIL FROM) or "recipient"
	// (one per RCPT TO).
	Count string `toml:"count"`
	// Action is "defer" (default: 450 4.7.1) or "disconnect" (421 4.7.0,
	// and the connection is closed).
	Action string `toml:"action"`
	// IPv4Prefix and IPv6Prefix are the network of key client_net;
	// default 24 and 64.
	IPv4Prefix int `toml:"ipv4_prefix"`
	IPv6Prefix int `toml:"ipv6_prefix"`
	// ExemptTrusted leaves clients in trusted_networks uncounted; default
	// true.
	ExemptTrusted bool `toml:"exempt_trusted"`
	// Exempt is what the rule does not count: its entries match as
	// [policy.allow]'s do.
	Exempt List `toml:"exempt"`
}

// RateLimitKeys are the keys a [[ratelimit]] may count under.
var RateLimitKeys = []string{"client_ip", "client_net", "sender", "sender_domain", "recipient", "auth"}

// Policy is the [policy] table: how the verdicts of the stages and the
// total score map to an action, the allow- and block-lists, and the
// overrides for some recipients. README.md documents every key.
type Policy struct {
	TagScore        float64 `toml:"tag_score,omitzero"`        // default 5
	QuarantineScore float64 `toml:"quarantine_score,omitzero"` // default 10
	RejectScore     float64 `toml:"reject_score,omitzero"`     // default 15
	// SubjectTag prefixes the Subject of a tagged message; default "[SPAM]"
	// when the key is not written, "" for none.
	SubjectTag string `toml:"subject_tag"`
	// TagHeaders are "Name: value" header fields added to a tagged message.
	TagHeaders []string `toml:"tag_headers,omitempty"`

	Allow List `toml:"allow"` // an entry accepts without running the stages
	Block List `toml:"block"` // an entry rejects; it wins over Allow

	// Overrides lay other thresholds, tags and result mappings over these
	// for some recipients; see For.
	Overrides []Override `toml:"override,omitempty"`
}

// Override is one [[policy.override]]: the policy of some recipients. A
// value it does not set is taken from [policy].
type Override struct {
	Name string `toml:"name,omitempty"` // for logs; default: its first rcpt or domain
	// Domains are recipient domains: "example.test", or "*.example.test"
	// for its subdomains.
	Domains []string `toml:"domains,omitempty"`
	// Rcpts are recipient addresses; they win over Domains.
	Rcpts []string `toml:"rcpts,omitempty"`

	TagScore        float64 `toml:"tag_score,omitzero"`
	QuarantineScore float64 `toml:"quarantine_score,omitzero"`
	RejectScore     float64 `toml:"reject_score,omitzero"`
	SubjectTag      *string `toml:"subject_tag"` // nil: [policy]'s; "" for none
	// TagHeaders replace those of [policy]; nil takes them, [] means none.
	TagHeaders []string `toml:"tag_headers"`
	// Results maps stage name → result word → action, over the stage's own
	// [stage.results].
	Results map[string]map[string]string `toml:"results,omitempty"`
}

// List is [policy.allow] or [policy.block]. Each key is checked at the
// phase where its item is known.
type List struct {
	ClientIPs []string `toml:"client_ips,omitempty"` // "192.0.2.1" or "192.0.2.0/24", at connect
	Helos     []string `toml:"helos,omitempty"`      // "mail.example.org" or "*.example.org", at helo
	Senders   []string `toml:"senders,omitempty"`    // an address, a domain, "@domain" or "*.domain", at mail
	Rcpts     []string `toml:"rcpts,omitempty"`      // the same forms as senders, at rcpt
}

// Log is the [log] table.
type Log struct {
	Level  string `toml:"level"`  // debug, info (default), warn or error
	Format string `toml:"format"` // text (default) or json
}

// Cluster is the [cluster] table (README.md: Cluster): where the nodes of
// a cluster share their state. Each engine is used when its URL is set.
type Cluster struct {
	// Postgres holds the quarantine, the traces, the users' lists, the
	// DMARC records, the audit log and the registry of nodes: a postgres://
	// URL or a key=value connection string, as libpq reads them.
	Postgres string `toml:"postgres"`
	// Redis holds the rate limits' counters, greylisting's triplets and
	// the pre-greet cache: redis://, rediss:// or unix://, naming a server,
	// Sentinels (master_name=) or a Redis Cluster (addr=, cluster=true).
	Redis string `toml:"redis"`
	// Node names this node among the others; default the machine's host
	// name.
	Node string `toml:"node"`
	// Timeout bounds each operation on either engine; default 5s.
	Timeout stages.Duration `toml:"timeout"`
	// ConnectTimeout bounds the making of a connection; default 5s.
	ConnectTimeout stages.Duration `toml:"connect_timeout"`
	// MaxConns is the most connections this node opens to each engine;
	// default 10.
	MaxConns int `toml:"max_conns"`
}

// StageEnv is what the stages of c are lent by the engine (stages.Env).
func (c *Config) StageEnv() stages.Env {
	env := stages.Env{Hostname: c.Hostname, DNSServers: c.DNS.Servers, DNSTimeout: time.Duration(c.DNS.Timeout), DataDir: c.DataDir,
		Shared: c.Cluster.Postgres != ""}
	if cl := c.Cluster; cl.Redis != "" {
		env.Redis = stages.Redis{URL: cl.Redis, Timeout: time.Duration(cl.Timeout),
			ConnectTimeout: time.Duration(cl.ConnectTimeout), MaxConns: cl.MaxConns}
	}
	return env
}

// Retention is the [quarantine] and [trace] tables.
type Retention struct {
	Retention stages.Duration `toml:"retention"` // delete after this; default 720h (30 days)
}
