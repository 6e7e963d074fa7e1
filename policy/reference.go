package policy

import (
	"encoding"
	"reflect"
	"strings"

	"github.com/BurntSushi/toml"

	"github.com/mailgate/mailgate/stages"
)

// KeyDoc is the reference text of one key of mailgate's own tables. The
// README's configuration reference, the mailgate.toml(5) manual page and
// `mailgate config -d` are made from Reference, the validator takes the
// allowed values of a key from it, and a test checks it against Config by
// reflection: a key the loader takes cannot be left out, and a default
// written here must be the one the loader fills in.
type KeyDoc struct {
	// Key is the key's path as a file writes it, arrays of tables without
	// an index: "server.listen", "route.tls", "policy.override.results".
	Key string
	// Default is the default as a TOML value (`"5m"`, `1000`, `["a"]`),
	// checked against the loader's; or text in parentheses for a default
	// that depends on something else ("(hostname)"); or "" for none.
	Default string
	// Values are the values allowed, for a key that takes one of a few
	// words; the validator accepts exactly these.
	Values []string
	// Text says what the key does: a sentence or two, `code` and
	// [links](#anchor) as in Markdown. A table's text introduces it.
	Text string
}

// Reference documents every key of Config, tables included, in the order
// of the struct. A key added to Config needs its line here (the test says
// which line to add); the generated docs then need
// `go test ./policy -run TestReferenceDocs -update`.
var Reference = []KeyDoc{
	{"hostname", "(the machine's host name)", nil, "the gateway's name: greeting, `Received`, DSNs, `Authentication-Results`"},
	{"data_dir", "(required)", nil, "spool, quarantine, traces, stage state, the users' lists and the audit log (`state.db`) and the [pickup directory](#pickup-directory); one `mailgate serve` at a time"},

	{"server", "", nil, "The SMTP listeners and their limits."},
	{"server.listen", `["127.0.0.1:2525"]`, nil, "SMTP listeners, `host:port`"},
	{"server.max_message_size", `"50MB"`, nil, "announced in EHLO `SIZE`; a larger `SIZE=` or message gets `552 5.3.4`"},
	{"server.max_recipients", `1000`, nil, "per message; more get `452 4.5.3`"},
	{"server.max_connections", `2000`, nil, "in total; over it `421 4.7.0` and close"},
	{"server.max_connections_per_ip", `50`, nil, "per client address; over it `421 4.7.0` and close"},
	{"server.max_line_length", `16384`, nil, "bytes of a command or DATA line; longer gets `500 5.5.2`"},
	{"server.max_hops", `50`, nil, "`Received` fields before a loop is assumed: `554 5.4.6`"},
	{"server.command_timeout", `"5m"`, nil, "waiting for a command line (RFC 5321 §4.5.3.2); a client that stalls, even in the middle of a line, gets `421 4.4.2` and is disconnected"},
	{"server.data_timeout", `"10m"`, nil, "time without a byte from the client while it sends a message (DATA or a BDAT chunk): `421 4.4.2`, then close"},
	{"server.data_total_timeout", `"1h"`, nil, "time to receive a whole message, all BDAT chunks together, so a client trickling a byte at a time cannot hold a connection for ever: `421 4.4.2`, then close"},
	{"server.filter_timeout", `"60s"`, nil, "the stages of one phase; at DATA, `451 4.3.2` when it runs out"},
	{"server.trusted_networks", `[]`, nil, "CIDRs that may relay to any domain (your own servers sending out)"},
	{"server.tls_cert", "", nil, "PEM file of the certificate; with `tls_key`, STARTTLS is offered. Renewed files are loaded without a restart (see [Reload](#reload))"},
	{"server.tls_key", "", nil, "PEM file of the certificate's private key; required with `tls_cert`"},
	{"server.bare_lf", `"normalize"`, []string{"normalize", "reject"}, "a bare CR or LF inside a message: made CRLF (a bare CR a space), or the message refused `550 5.5.2`; see [Line ends and SMTP smuggling](#line-ends-and-smtp-smuggling)"},
	{"server.proxy_protocol", `false`, nil, "every listener is behind proxies that send a PROXY header: see [PROXY protocol](#proxy-protocol)"},
	{"server.proxy_trusted", `[]`, nil, "the proxies, CIDRs or addresses; required with `proxy_protocol = true`, unused without it"},
	{"server.pregreet_delay", `"0s"`, nil, "how long the banner waits (`\"0s\"`: off, at most `\"1m\"`); a client that talks first is refused: see [Pre-greet test](#pre-greet-test)"},
	{"server.pregreet_good_ttl", `"24h"`, nil, "a client that passed the pre-greet test is not tested again for this long"},
	{"server.pregreet_bad_ttl", `"1h"`, nil, "a client that failed it is refused at once for this long"},

	{"dns", "", nil, "The DNS client of the stages and of MX lookups."},
	{"dns.servers", "(the nameservers of /etc/resolv.conf)", nil, "recursive resolvers, `host:port`, asked in order"},
	{"dns.timeout", `"5s"`, nil, "one query to one server; stages' own `dns_timeout` defaults to it"},

	{"admin", "", nil, "The local admin listener."},
	{"admin.listen", `"127.0.0.1:8025"`, nil, "`/metrics`, `/healthz` and the admin API the CLI uses; `\"\"` turns it off"},

	{"delivery", "", nil, "How queued mail is relayed."},
	{"delivery.max_age", `"120h"`, nil, "how long a message is retried before it bounces (5 days)"},
	{"delivery.retry_min", `"1m"`, nil, "the first retry delay; it doubles after each failure"},
	{"delivery.retry_max", `"1h"`, nil, "the longest retry delay"},
	{"delivery.connect_timeout", `"30s"`, nil, "connecting to the next hop"},
	{"delivery.command_timeout", `"5m"`, nil, "each SMTP command to the next hop"},
	{"delivery.max_connections", `20`, nil, "concurrent connections per destination"},
	{"delivery.bounce_from", "(MAILER-DAEMON@hostname)", nil, "the `From` of DSNs (their envelope sender is always `<>`)"},
	{"delivery.helo_name", "(hostname)", nil, "the EHLO name sent to the next hop"},
	{"delivery.idle_conn_timeout", `"30s"`, nil, "how long an idle connection is kept for the next message"},

	{"route", "", nil, "Where mail for some recipient domains goes; one `[[route]]` each."},
	{"route.domains", "(required)", nil, "`\"example.test\"`, `\"*.example.test\"` (subdomains) or `\"*\"` (every other domain; it does not open relaying)"},
	{"route.servers", "", nil, "next hops, `host:port`, tried in order; one of `servers`, `mx`, `maildir`"},
	{"route.mx", `false`, nil, "deliver to the recipient domain's MX hosts"},
	{"route.maildir", "", nil, "deliver into a local Maildir (the quickstart)"},
	{"route.tls", `"opportunistic"`, []string{"opportunistic", "required", "none"}, "TLS to the next hop"},
	{"route.tls_skip_verify", `false`, nil, "accept any certificate from the next hop"},
	{"route.verify_rcpts", `false`, nil, "ask the servers at RCPT whether they take the recipient: see [verify_rcpts](#verify_rcpts)"},
	{"route.verify_rcpts_unverified", `("tempfail" with verify_rcpts)`, []string{"tempfail", "accept"}, "what a recipient that could not be verified gets: `450 4.1.1`, or taken"},

	{"stage", "", nil, "One filter of the chain; one `[[stage]]` each, run in order."},
	{"stage.name", "(required)", nil, "unique; logs, metrics, traces and `[policy.override] results` use it"},
	{"stage.kind", "(required)", nil, "a built-in kind or `plugin`"},
	{"stage.on_error", `"tempfail"`, []string{"tempfail", "accept", "reject", "quarantine", "skip"}, "what a message gets when the stage breaks (crash, timeout, scanner down)"},
	{"stage.timeout", `"10s"`, nil, "one call of the stage"},
	{"stage.path", "", nil, "the executable of a `plugin`"},
	{"stage.sha256", "", nil, "the executable's SHA-256 as sha256sum prints it: a plugin that does not match is not started"},
	{"stage.process", "", nil, "a process group: the built-in stages with the same `process` share one plugin process, apart from the gateway, and a phase's calls to them go in one round trip; a crash of that process fails the calls of all of them (each applies its `on_error`). Not for `plugin`, which always runs alone. A name only one stage has is refused as a likely typo of another group's. Unset: a process of its own ([Performance](#performance))"},
	{"stage.config", `{}`, nil, "`[stage.config]`: the kind's own keys (its README)"},
	{"stage.results", `{}`, nil, "`[stage.results]`: result word to action in place of the kind's default (its README's Results), checked against the words the kind declares; the one way to choose a stage's action"},

	{"ratelimit", "", nil, "A limit on how fast mail may come, counted under one key of the envelope; one `[[ratelimit]]` each: see [Rate limits](#rate-limits)."},
	{"ratelimit.name", "(required)", nil, "unique, of `a-z`, `0-9`, `_`, `-`: logs, traces, the `rule` label of the metrics"},
	{"ratelimit.key", "(required)", RateLimitKeys, "what is counted"},
	{"ratelimit.rate", "(required)", nil, "`rate` events pass per `per` (`rate = 100`, `per = \"1h\"`) once the burst is spent"},
	{"ratelimit.per", "(required)", nil, "the period of `rate`"},
	{"ratelimit.burst", "(rate)", nil, "events that pass at once"},
	{"ratelimit.count", `"message"`, []string{"message", "recipient"}, "`message`: one per `MAIL FROM`, checked at MAIL; `recipient`: one per `RCPT TO`, checked at RCPT"},
	{"ratelimit.action", `"defer"`, []string{"defer", "disconnect"}, "`defer`: `450 4.7.1`; `disconnect`: `421 4.7.0` and the connection is closed"},
	{"ratelimit.ipv4_prefix", `(24 with key = "client_net")`, nil, "`key = \"client_net\"` only: the client's IPv4 network, 8 to 32 bits"},
	{"ratelimit.ipv6_prefix", `(64 with key = "client_net")`, nil, "`key = \"client_net\"` only: the client's IPv6 network, 16 to 128 bits"},
	{"ratelimit.exempt_trusted", `true`, nil, "clients in `trusted_networks` are not counted; `false` counts them (limits on your own users sending out)"},
	{"ratelimit.exempt", "", nil, "`[ratelimit.exempt]`: what the rule does not count, written and matched as `[policy.allow]`."},
	{"ratelimit.exempt.client_ips", `[]`, nil, "as `policy.allow.client_ips`"},
	{"ratelimit.exempt.helos", `[]`, nil, "as `policy.allow.helos`"},
	{"ratelimit.exempt.senders", `[]`, nil, "as `policy.allow.senders`"},
	{"ratelimit.exempt.rcpts", `[]`, nil, "as `policy.allow.rcpts`"},

	{"policy", "", nil, "How the verdicts and the total score map to an action: see [policy/README.md](policy/README.md)."},
	{"policy.tag_score", `5.0`, nil, "a total score of at least this tags the message"},
	{"policy.quarantine_score", `10.0`, nil, "a total of at least this quarantines the message"},
	{"policy.reject_score", `15.0`, nil, "a total of at least this rejects the message; `tag_score <= quarantine_score <= reject_score`"},
	{"policy.subject_tag", `"[SPAM]"`, nil, "put before the Subject of a tagged message (once); `\"\"` tags no subject"},
	{"policy.tag_headers", `[]`, nil, "header fields added to a tagged message, each `\"Name: value\"`"},
	{"policy.allow", "", nil, "`[policy.allow]`: an entry that matches accepts without running the stages; each key is checked at the phase where its item is known."},
	{"policy.allow.client_ips", `[]`, nil, "at connect: an address (`\"192.0.2.1\"`) or a network (`\"192.0.2.0/24\"`)"},
	{"policy.allow.helos", `[]`, nil, "at helo: a host name, `\"*.example.org\"` for any name under it, or an address literal (`\"[192.0.2.1]\"`)"},
	{"policy.allow.senders", `[]`, nil, "at mail: an address, a domain (`\"example.org\"` or `\"@example.org\"`), or `\"*.example.org\"`"},
	{"policy.allow.rcpts", `[]`, nil, "at rcpt: the same forms as `senders`"},
	{"policy.block", "", nil, "`[policy.block]`: an entry that matches rejects (`550 5.7.1`); it wins over `[policy.allow]`."},
	{"policy.block.client_ips", `[]`, nil, "as `policy.allow.client_ips`"},
	{"policy.block.helos", `[]`, nil, "as `policy.allow.helos`"},
	{"policy.block.senders", `[]`, nil, "as `policy.allow.senders`"},
	{"policy.block.rcpts", `[]`, nil, "as `policy.allow.rcpts`"},
	{"policy.override", "", nil, "`[[policy.override]]`: the policy of some recipients; a key it does not set comes from `[policy]`."},
	{"policy.override.name", "(its first rcpt or domain)", nil, "shown in logs, traces and threshold reasons; unique, not `\"default\"`"},
	{"policy.override.domains", "", nil, "recipient domains, `\"example.test\"` or `\"*.example.test\"`; required without `rcpts`"},
	{"policy.override.rcpts", "", nil, "recipient addresses; they win over `domains`"},
	{"policy.override.tag_score", "([policy]'s)", nil, "as in `[policy]`"},
	{"policy.override.quarantine_score", "([policy]'s)", nil, "as in `[policy]`"},
	{"policy.override.reject_score", "([policy]'s)", nil, "as in `[policy]`"},
	{"policy.override.subject_tag", "([policy]'s)", nil, "as in `[policy]`; `\"\"` tags no subject"},
	{"policy.override.tag_headers", "([policy]'s)", nil, "replace those of `[policy]`; `[]` adds none"},
	{"policy.override.results", `{}`, nil, "result mappings by stage name, over the stage's own: `results.spf.softfail = \"reject\"`"},

	{"log", "", nil, "What the gateway logs: see [Logs](#logs)."},
	{"log.level", `"info"`, []string{"debug", "info", "warn", "error"}, "the least severe line written; a reload changes it"},
	{"log.format", `"text"`, []string{"text", "json"}, "`key=value` lines or one JSON object a line; a change needs a restart"},

	{"quarantine", "", nil, "The quarantine under `data_dir`."},
	{"quarantine.retention", `"720h"`, nil, "quarantined messages are deleted after this (30 days)"},

	{"trace", "", nil, "The message traces under `data_dir`."},
	{"trace.retention", `"720h"`, nil, "trace files are deleted after this (30 days)"},

	{"cluster", "", nil, "The state the nodes of a cluster share: see [Cluster](#cluster). Without it one node keeps its state under `data_dir`."},
	{"cluster.postgres", "", nil, "the PostgreSQL the nodes share (`postgres://user:password@host/db`, or libpq's `key=value` form): quarantine, traces, lists, DMARC records, audit, the node registry"},
	{"cluster.redis", "", nil, "the Redis (or Valkey) the nodes share: a server, Sentinels (`master_name=`) or a Redis Cluster (`addr=`, `cluster=true`): rate-limit counters, greylist triplets, the pre-greet cache"},
	{"cluster.node", "(the machine's host name, in lower case)", nil, "this node's name among the others: `a-z`, `0-9`, `.`, `_`, `-`, up to 63"},
	{"cluster.timeout", `"5s"`, nil, "each operation on PostgreSQL or Redis"},
	{"cluster.connect_timeout", `"5s"`, nil, "making a connection to either"},
	{"cluster.max_conns", `10`, nil, "the most connections this node opens to each"},

	{"web", "", nil, "The [web console](#web-console): off unless `listen` is set."},
	{"web.listen", "", nil, "the console's `host:port`; `\"\"`: no console. A change needs a restart"},
	{"web.base_url", "", nil, "the URL users reach the console at (`\"https://console.example.test\"`): links in digest mails start with it, and its host is one the console answers to"},
	{"web.hosts", `[]`, nil, "other names or addresses the console answers to. With `base_url` or `hosts`, a request for any other `Host` gets `421`, loopback addresses and `localhost` included (a proxy passes the name: `proxy_set_header Host $host`); with neither, the console answers to `listen`'s host, the address connected to and, on loopback, `localhost`"},
	{"web.trusted_proxies", `[]`, nil, "the reverse proxies (CIDRs or addresses) whose `X-Forwarded-For` is believed: the client's address for the login limits and the logs is the last one there that is not a proxy; from others the header is ignored"},
	{"web.tls_cert", "([server]'s)", nil, "PEM file of the console's certificate; with neither pair, plain HTTP, which only a loopback `listen` may use (behind a TLS proxy). A change needs a restart"},
	{"web.tls_key", "([server]'s)", nil, "PEM file of the console certificate's private key; required with `tls_cert`"},
	{"web.secret_file", "(<data_dir>/web/secret)", nil, "the key that signs sessions, CSRF tokens and end users' links; made at the first start, refused when group or others may read it; the nodes of a cluster share one"},
	{"web.session_ttl", `"12h"`, nil, "how long a login lasts"},
	{"web.link_ttl", `"168h"`, nil, "how long an end user's quarantine link works (7 days)"},
	{"web.enduser_release", `[]`, nil, "stages whose holds end users may release from their links too; by default they may release only what a score threshold held, never what a stage held by its own action (a virus, a file type, DMARC `p=quarantine`): those show \"ask your administrator\", and admins release them"},
	{"web.user", "", nil, "The accounts of the console: `mailgate user add` adds one."},
	{"web.user.name", "(required)", nil, "the login name, unique, without spaces"},
	{"web.user.password_hash", "(required)", nil, "bcrypt (`$2b$…`, as `htpasswd -B` makes) or argon2id (`$argon2id$…`, as `mailgate user add` prints); never the password"},
	{"web.user.role", `"admin"`, []string{"admin", "auditor"}, "`admin` (everything) or `auditor` (reads: traces, quarantine, queues, dashboard; changes nothing)"},
	{"web.digest", "", nil, "The end users' daily mail: the messages held for them, with links to read, release, allow or block."},
	{"web.digest.at", "", nil, "the time of day (`\"07:00\"`, the gateway's time zone) a digest goes to each recipient with mail held since the last one; `\"\"`: no digests; needs `base_url`"},
	{"web.digest.from", "(quarantine@<hostname>)", nil, "the digests' sender"},
	{"web.digest.subject", "(the console's own)", nil, "the subject, a Go `text/template` with the body's data; the console's own is `Quarantine: {{len .Messages}} message(s) held for {{.Rcpt}}`"},
	{"web.digest.template", "(the console's own)", nil, "a file with the body as a Go `text/template` (see [Web console](#web-console))"},
	{"web.digest.domains", "(the domains of exact and `*.` routes)", nil, "recipients at these domains (`\"example.test\"`, `\"*.example.test\"`) get digests"},
}

// Key is one key of Config found by reflection, with its reference text.
type Key struct {
	KeyDoc
	// Name is the key as `mailgate config` and errors write it, with []
	// for an array of tables: "route[].tls".
	Name string
	// Type is what the key takes: "string", "integer", "number",
	// "boolean", "duration", "size", "array of strings", "table" or
	// "array of tables".
	Type string
	// Table is true for a table or an array of tables of mailgate's own
	// (not a map such as [stage.results]): the keys after it are its own.
	Table bool
	// Documented is false for a key Reference lacks.
	Documented bool
}

// Keys lists every key of Config in struct order, tables before their
// keys, each with its Reference entry.
func Keys() []Key {
	docs := make(map[string]KeyDoc, len(Reference))
	for _, d := range Reference {
		docs[d.Key] = d
	}
	var out []Key
	var walk func(t reflect.Type, path, name string)
	walk = func(t reflect.Type, path, name string) {
		for _, f := range structFields(t).list {
			ft := t.FieldByIndex(f.index).Type
			k := Key{Name: join(name, f.name), Type: typeName(ft)}
			k.KeyDoc, k.Documented = docs[join(path, f.name)]
			k.Key = join(path, f.name)
			elem := ft
			if ft.Kind() == reflect.Slice {
				elem = ft.Elem()
			}
			if elem.Kind() != reflect.Struct || elem == primitiveType || decodesItself(elem) {
				out = append(out, k)
				continue
			}
			sub := k.Name
			if ft.Kind() == reflect.Slice {
				sub += "[]"
			}
			k.Table = true
			out = append(out, k)
			walk(elem, k.Key, sub)
		}
	}
	walk(reflect.TypeFor[Config](), "", "")
	return out
}

// typeName says what a field takes, as the reference writes it.
func typeName(t reflect.Type) string {
	switch t {
	case reflect.TypeFor[stages.Duration]():
		return "duration"
	case reflect.TypeFor[stages.Size]():
		return "size"
	case reflect.TypeFor[toml.Primitive]():
		return "table"
	}
	if decodesItself(t) {
		return "string"
	}
	switch t.Kind() {
	case reflect.Pointer:
		return typeName(t.Elem())
	case reflect.String:
		return "string"
	case reflect.Bool:
		return "boolean"
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "number"
	case reflect.Map, reflect.Struct:
		return "table"
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Struct {
			return "array of tables"
		}
		return "array of " + typeName(t.Elem()) + "s"
	}
	return t.String()
}

// decodesItself reports whether t is a value written as a string that decodes
// itself (a [[web.user]]'s password_hash): a key, not a table.
func decodesItself(t reflect.Type) bool {
	return t.Kind() == reflect.Struct && reflect.PointerTo(t).Implements(reflect.TypeFor[encoding.TextUnmarshaler]())
}

// allowed returns the values Reference allows for the key at dotted (a
// path as the loader keeps it, "route.0.tls").
func allowed(dotted string) []string { return docOf(dotted).Values }

// docOf returns the Reference entry of the key at dotted.
func docOf(dotted string) KeyDoc {
	var parts []string
	for _, p := range strings.Split(dotted, ".") {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			continue // an index into an array of tables
		}
		parts = append(parts, p)
	}
	path := strings.Join(parts, ".")
	for _, d := range Reference {
		if d.Key == path {
			return d
		}
	}
	return KeyDoc{}
}
