package policy

import (
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// Trusted returns TrustedNetworks parsed; single addresses are prefixes of
// full length. The list is built by Parse and Validate, once per load, so a
// Server put together in Go without them trusts no one.
func (s Server) Trusted() []netip.Prefix { return s.trusted }

// Proxies returns ProxyTrusted parsed, as Trusted does TrustedNetworks.
func (s Server) Proxies() []netip.Prefix { return s.proxies }

// Validate checks every field of a decoded config and returns an Errors
// listing each problem. It also prepares what the loader derives from the
// config (Server.Trusted) and puts every domain and address of routes,
// overrides, lists and bounce_from in the canonical form of package
// address (lower case, no root dot, A-labels), the form the SMTP side
// gives envelope addresses: an entry written in U-labels is taken.
func (c *Config) Validate() error {
	return c.validate().err()
}

func (c *Config) validate() Errors {
	var pos positions
	if c.src != nil {
		pos = c.src.pos
	}
	v := &validator{reporter: reporter{file: c.File, pos: pos}}
	root := key{}
	if c.Hostname == "" {
		v.errorf(root.field("hostname"), `required; expect the gateway's host name such as "mx.example.test"`)
	} else if !address.IsHostname(c.Hostname) {
		v.errorf(root.field("hostname"), `unexpected %q; expect a host name such as "mx.example.test"`, c.Hostname)
	}
	if c.DataDir == "" {
		v.errorf(root.field("data_dir"), `required; expect the directory for the spool and quarantine such as "/var/lib/mailgate"`)
	}
	v.server(&c.Server, root.field("server"))
	v.dns(&c.DNS, root.field("dns"))
	if c.Admin.Listen != "" {
		v.hostPort(root.field("admin").field("listen"), c.Admin.Listen, true, "127.0.0.1:8025")
	}
	v.delivery(&c.Delivery, root.field("delivery"), c.Hostname)
	v.routes(c.Routes, root.field("route"))
	v.stages(c.Stages, root.field("stage"))
	v.rateLimits(c.RateLimits, root.field("ratelimit"))
	names := make([]string, 0, len(c.Stages))
	for _, st := range c.Stages {
		names = append(names, st.Name)
	}
	v.policy(&c.Policy, root.field("policy"), names)
	v.enum(root.field("log").field("level"), c.Log.Level)
	v.enum(root.field("log").field("format"), c.Log.Format)
	v.cluster(&c.Cluster, root.field("cluster"))
	v.web(c, root.field("web"))
	return v.errs
}

// cluster checks [cluster]. What is wrong with a URL is said without
// quoting its password.
func (v *validator) cluster(c *Cluster, k key) {
	if c.Postgres != "" {
		if _, err := pgconn.ParseConfig(c.Postgres); err != nil {
			v.errorf(k.field("postgres"), `unexpected %q; expect a PostgreSQL URL such as "postgres://mailgate@db.example.test/mailgate"`, redactURL(c.Postgres))
		}
	}
	if c.Redis != "" {
		if err := redisconn.Check(c.Redis); err != nil {
			v.errorf(k.field("redis"), `unexpected %q (%v); expect a Redis URL such as "redis://cache.example.test:6379/0"`, redactURL(c.Redis), err)
		}
	}
	// The machine's name is the default: checked only when it is used.
	if (c.Postgres != "" || c.Redis != "") && !isNodeName(c.Node) {
		v.errorf(k.field("node"), `unexpected %q; expect a name of up to 63 of a-z, 0-9, ".", "_" and "-" such as "mx1"`, c.Node)
	}
	v.duration(k.field("timeout"), c.Timeout)
	v.duration(k.field("connect_timeout"), c.ConnectTimeout)
	v.positive(k.field("max_conns"), c.MaxConns)
}

// redactURL is a URL or a key=value connection string with its password
// hidden.
func redactURL(s string) string {
	if u, err := url.Parse(s); err == nil && u.Scheme != "" {
		return u.Redacted()
	}
	return passwordField.ReplaceAllString(s, "${1}xxxxx")
}

var passwordField = regexp.MustCompile(`(password\s*=\s*)('[^']*'|\S*)`)

// isNodeName reports whether s may name a node: what a host name is made
// of, in lower case only, so that "MX1" and "mx1" are not two nodes.
func isNodeName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return s != "" && len(s) <= 63
}

type validator struct {
	reporter
	// loose checks a Policy put together in Go: see Policy.Check.
	loose bool
}

func (v *validator) server(s *Server, k key) {
	if len(s.Listen) == 0 {
		v.errorf(k.field("listen"), `required; expect addresses such as ["0.0.0.0:25"]`)
	}
	for i, addr := range s.Listen {
		v.hostPort(k.field("listen").index(i), addr, true, "0.0.0.0:25")
	}
	if s.MaxMessageSize <= 0 {
		v.errorf(k.field("max_message_size"), `unexpected %d; expect a size above 0 such as "50MB"`, s.MaxMessageSize)
	}
	v.positive(k.field("max_recipients"), s.MaxRecipients)
	v.positive(k.field("max_connections"), s.MaxConnections)
	v.positive(k.field("max_connections_per_ip"), s.MaxConnectionsPerIP)
	v.positive(k.field("max_line_length"), s.MaxLineLength)
	v.positive(k.field("max_hops"), s.MaxHops)
	v.duration(k.field("command_timeout"), s.CommandTimeout)
	v.duration(k.field("data_timeout"), s.DataTimeout)
	v.duration(k.field("data_total_timeout"), s.DataTotalTimeout)
	v.duration(k.field("filter_timeout"), s.FilterTimeout)
	s.trusted = v.networks(k.field("trusted_networks"), s.TrustedNetworks)
	s.proxies = v.networks(k.field("proxy_trusted"), s.ProxyTrusted)
	if s.ProxyProtocol && len(s.ProxyTrusted) == 0 {
		v.errorf(k.field("proxy_trusted"), `required with proxy_protocol = true; expect the proxies' networks such as ["10.0.0.0/8"]`)
	}
	// The banner must come well within the 5 minutes a client waits for
	// it (RFC 5321 §4.5.3.2.1); many give up sooner.
	if s.PregreetDelay < 0 || s.PregreetDelay > stages.Duration(time.Minute) {
		v.errorf(k.field("pregreet_delay"), `unexpected %q; expect "0s" (off) or a duration up to "1m" such as "3s"`, s.PregreetDelay)
	}
	v.duration(k.field("pregreet_good_ttl"), s.PregreetGoodTTL)
	v.duration(k.field("pregreet_bad_ttl"), s.PregreetBadTTL)
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		v.errorf(k.field("tls_key"), "required with tls_cert; expect the PEM file of the certificate's private key")
	case s.TLSCert == "" && s.TLSKey != "":
		v.errorf(k.field("tls_cert"), "required with tls_key; expect the PEM file of the certificate")
	}
	v.enum(k.field("bare_lf"), s.BareLF)
}

// networks parses a list of networks (CIDRs) and single addresses (full
// length prefixes).
func (v *validator) networks(k key, list []string) []netip.Prefix {
	var out []netip.Prefix
	for i, n := range list {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				v.errorf(k.index(i), `unexpected %q; expect a network such as "10.0.0.0/8" or an address such as "192.0.2.1"`, n)
				continue
			}
			// Clients are compared unmapped: ::ffff:192.0.2.1 is 192.0.2.1.
			a = a.Unmap()
			p = netip.PrefixFrom(a, a.BitLen())
		}
		out = append(out, p.Masked())
	}
	return out
}

func (v *validator) dns(d *DNS, k key) {
	for i, s := range d.Servers {
		// An address, not a name: looking up the resolver's name would need
		// a resolver.
		if _, err := netip.ParseAddrPort(s); err != nil {
			v.errorf(k.field("servers").index(i), `unexpected %q; expect an address and port such as "127.0.0.1:53"`, s)
		}
	}
	v.duration(k.field("timeout"), d.Timeout)
}

// delivery checks [delivery]; hostname is where helo_name and bounce_from
// come from when not set, and a bad hostname is reported once, as hostname.
func (v *validator) delivery(d *Delivery, k key, hostname string) {
	v.duration(k.field("max_age"), d.MaxAge)
	v.duration(k.field("retry_min"), d.RetryMin)
	v.duration(k.field("retry_max"), d.RetryMax)
	v.duration(k.field("connect_timeout"), d.ConnectTimeout)
	v.duration(k.field("command_timeout"), d.CommandTimeout)
	v.duration(k.field("idle_conn_timeout"), d.IdleConnTimeout)
	if d.RetryMin > d.RetryMax {
		v.errorf(k.field("retry_min"), "%s is above retry_max %s; expect retry_min <= retry_max", d.RetryMin, d.RetryMax)
	}
	v.positive(k.field("max_connections"), d.MaxConnections)
	if a, ok := mailbox(d.BounceFrom); ok {
		d.BounceFrom = a
	} else if d.BounceFrom != "MAILER-DAEMON@"+hostname {
		v.errorf(k.field("bounce_from"), `unexpected %q; expect an address such as "MAILER-DAEMON@mx.example.test"`, d.BounceFrom)
	}
	if d.HeloName != hostname && !address.IsHostname(d.HeloName) {
		v.errorf(k.field("helo_name"), `unexpected %q; expect a host name such as "mx.example.test"`, d.HeloName)
	}
}

func (v *validator) routes(routes []Route, k key) {
	routed := map[string]int{} // domain → the route that has it
	for i := range routes {
		r := &routes[i]
		rk := k.index(i)
		if len(r.Domains) == 0 {
			v.errorf(rk.field("domains"), `required; expect domains such as ["example.test", "*.example.test"] or ["*"]`)
		}
		for j, d := range r.Domains {
			dk := rk.field("domains").index(j)
			if d != "*" {
				p, err := address.Pattern(d)
				if err != nil {
					v.errorf(dk, `unexpected %q; expect a domain such as "example.test", "*.example.test" for its subdomains, or "*" for all`, d)
					continue
				}
				d, r.Domains[j] = p, p
			}
			if first, ok := routed[d]; ok && first == i {
				v.errorf(dk, "%q is listed twice", d)
				continue
			} else if ok {
				v.errorf(dk, "%q is routed twice; %s already has it", d, k.index(first).name)
				continue
			}
			routed[d] = i
		}
		n := 0
		for _, set := range []bool{len(r.Servers) > 0, r.MX, r.Maildir != ""} {
			if set {
				n++
			}
		}
		if n != 1 {
			v.errorf(rk, "set exactly one of servers, mx = true or maildir")
		}
		for j, s := range r.Servers {
			v.hostPort(rk.field("servers").index(j), s, false, "10.0.0.5:25")
		}
		if r.VerifyRcpts && len(r.Servers) == 0 {
			// Only servers of our own can be asked: MX hosts elsewhere
			// must not be probed for every recipient of a trusted client.
			v.errorf(rk.field("verify_rcpts"), "needs servers; a route with mx or maildir cannot verify recipients")
		}
		switch uk := rk.field("verify_rcpts_unverified"); {
		case r.VerifyRcptsUnverified != "" && !r.VerifyRcpts:
			v.errorf(uk, "needs verify_rcpts = true")
		case r.VerifyRcpts:
			v.enum(uk, r.VerifyRcptsUnverified)
		}
		v.enum(rk.field("tls"), r.TLS)
	}
}

func (v *validator) stages(list []StageConfig, k key) {
	named := map[string]int{}    // name → the stage that has it
	groups := map[string][]int{} // process → the built-in stages that name it
	for i, st := range list {
		sk := k.index(i)
		switch first, dup := named[st.Name]; {
		case st.Name == "":
			v.errorf(sk.field("name"), `required; expect a name such as "spf" of a-z, 0-9, _ and -`)
		case !isName(st.Name):
			v.errorf(sk.field("name"), "unexpected %q; expect a name of a-z, 0-9, _ and -", st.Name)
		case dup:
			v.errorf(sk.field("name"), "%q is used twice; %s has the same name", st.Name, k.index(first).name)
		default:
			named[st.Name] = i
		}
		v.results(sk.field("results"), st.Results)
		if st.Kind == "" {
			v.errorf(sk.field("kind"), `required; expect the filter's kind such as "spf" or "plugin"`)
		}
		v.enum(sk.field("on_error"), st.OnError)
		v.duration(sk.field("timeout"), st.Timeout)
		switch {
		case st.Process != "" && st.Kind == "plugin":
			v.errorf(sk.field("process"), `unexpected; process is only for built-in kinds: a plugin runs in a process of its own`)
		case st.Process != "" && !isName(st.Process):
			v.errorf(sk.field("process"), "unexpected %q; expect a name of a-z, 0-9, _ and -", st.Process)
		case st.Process != "":
			groups[st.Process] = append(groups[st.Process], i)
		}
		if st.Kind == "plugin" {
			if st.Path == "" {
				v.errorf(sk.field("path"), `required with kind = "plugin"; expect the plugin's executable`)
			}
			if b, err := hex.DecodeString(st.SHA256); st.SHA256 != "" && (err != nil || len(b) != 32) {
				v.errorf(sk.field("sha256"), "unexpected %q; expect 64 hexadecimal digits as sha256sum prints them", st.SHA256)
			}
			continue
		}
		if st.Path != "" {
			v.errorf(sk.field("path"), `unexpected; path is only for kind = "plugin"`)
		}
		if st.SHA256 != "" {
			v.errorf(sk.field("sha256"), `unexpected; sha256 is only for kind = "plugin"`)
		}
	}
	v.processGroups(groups, k)
}

// processGroups refuses a process group of one stage. It would run as a
// process of its own does, but a name no other stage uses is almost
// always a typo of another group's, which would quietly split the group
// (and its round trips) in two; so it is an error, as an override naming
// no stage is.
func (v *validator) processGroups(groups map[string][]int, k key) {
	names := sortedKeys(groups)
	for _, name := range names {
		if len(groups[name]) > 1 {
			continue
		}
		pk := k.index(groups[name][0]).field("process")
		others := slices.DeleteFunc(slices.Clone(names), func(o string) bool { return o == name })
		mean := ""
		if s := suggest(name, others); s != "" {
			mean = fmt.Sprintf(" did you mean %s?", s)
		}
		if len(others) > 0 {
			v.errorf(pk, "%q is the process of no other stage;%s expect %s, or no process for a process of its own", name, mean, oneOf(others))
		} else {
			v.errorf(pk, "%q is the process of no other stage; a process group is for two stages or more: give another built-in stage process = %q, or remove process for a process of its own", name, name)
		}
	}
}

func (v *validator) rateLimits(list []RateLimit, k key) {
	named := map[string]int{} // name → the rule that has it
	for i := range list {
		r := &list[i]
		rk := k.index(i)
		switch first, dup := named[r.Name]; {
		case r.Name == "":
			v.errorf(rk.field("name"), `required; expect a name such as "per-client" of a-z, 0-9, _ and -`)
		case !isName(r.Name):
			v.errorf(rk.field("name"), "unexpected %q; expect a name of a-z, 0-9, _ and -", r.Name)
		case dup:
			v.errorf(rk.field("name"), "%q is used twice; %s has the same name", r.Name, k.index(first).name)
		default:
			named[r.Name] = i
		}
		if r.Key == "" {
			v.errorf(rk.field("key"), "required; expect %s", oneOf(RateLimitKeys))
		} else {
			v.enum(rk.field("key"), r.Key)
		}
		// A 0 written in the file is refused by the decoder: 0 here is a
		// missing key.
		if r.Rate == 0 {
			v.errorf(rk.field("rate"), "required; expect how many messages or recipients pass per period (per), such as 100")
		}
		if r.Per == 0 {
			v.errorf(rk.field("per"), `required; expect the period of rate such as "1h"`)
		}
		v.enum(rk.field("count"), r.Count)
		v.enum(rk.field("action"), r.Action)
		for _, p := range []struct {
			name           string
			bits, min, max int
		}{{"ipv4_prefix", r.IPv4Prefix, 8, 32}, {"ipv6_prefix", r.IPv6Prefix, 16, 128}} {
			switch pk := rk.field(p.name); {
			case r.Key != "client_net" && p.bits != 0:
				v.errorf(pk, `unexpected; %s is only for key = "client_net"`, p.name)
			case r.Key == "client_net" && (p.bits < p.min || p.bits > p.max):
				v.errorf(pk, "unexpected %d; expect %d to %d", p.bits, p.min, p.max)
			}
		}
		v.list(&r.Exempt, rk.field("exempt"))
	}
}

// Check checks what of a Policy put together in Go, rather than loaded,
// would make the pipeline misbehave: header text that is not a header,
// list entries and override recipients that can never match, result words
// that are not actions. Thresholds are not checked: 0 turns one off.
func (p *Policy) Check() error {
	v := &validator{loose: true}
	v.policy(p, key{}.field("policy"), nil)
	return v.errs.err()
}

// policy checks [policy]; stageNames are the names of the [[stage]]s the
// results of an override refer to.
func (v *validator) policy(p *Policy, k key, stageNames []string) {
	all := [3]bool{true, true, true}
	v.thresholds(k, [3]float64{p.TagScore, p.QuarantineScore, p.RejectScore}, all)
	v.tagging(k, p.SubjectTag, p.TagHeaders)
	v.list(&p.Allow, k.field("allow"))
	v.list(&p.Block, k.field("block"))

	named := map[string]int{}   // override name → the override that has it
	domains := map[string]int{} // domain → the override that has it
	rcpts := map[string]int{}   // address → the override that has it
	ok := k.field("override")
	for i := range p.Overrides {
		o := &p.Overrides[i]
		k := ok.index(i)
		if len(o.Domains) == 0 && len(o.Rcpts) == 0 {
			v.errorf(k.field("domains"), `required without rcpts; expect the domains the override is for such as ["marketing.example.test"], or set rcpts such as ["legal@example.test"]`)
		}
		for j, d := range o.Domains {
			dk := k.field("domains").index(j)
			p, err := address.Pattern(d)
			if err != nil {
				v.errorf(dk, `unexpected %q; expect a domain such as "example.test" or "*.example.test" for its subdomains`, d)
				continue
			}
			v.canonical(&o.Domains[j], p)
			v.once(domains, p, i, dk, ok)
		}
		for j, r := range o.Rcpts {
			rk := k.field("rcpts").index(j)
			a, valid := mailbox(r)
			if !valid {
				v.errorf(rk, `unexpected %q; expect an address such as "legal@example.test"`, r)
				continue
			}
			v.canonical(&o.Rcpts[j], a)
			v.once(rcpts, address.Key(a), i, rk, ok)
		}
		name := o.name()
		switch first, dup := named[name]; {
		case o.Name != "" && !isText(o.Name):
			v.errorf(k.field("name"), "unexpected %q; expect a name without control characters", o.Name)
		case name == DefaultName:
			v.errorf(k.field("name"), "%q is the name of [policy] itself; expect another name", name)
		case dup:
			v.errorf(k.field("name"), "%q is used twice; %s has the same name", name, ok.index(first).name)
		case name != "":
			named[name] = i
		}
		// Unset values come from [policy]; the thresholds must be in order
		// once combined.
		own := [3]bool{o.TagScore != 0, o.QuarantineScore != 0, o.RejectScore != 0}
		e := p.override(i)
		v.thresholds(k, [3]float64{e.TagScore, e.QuarantineScore, e.RejectScore}, own)
		if o.SubjectTag != nil {
			v.tagging(k, *o.SubjectTag, nil)
		}
		v.tagging(k, "", o.TagHeaders)
		for _, stage := range sortedKeys(o.Results) {
			sk := k.field("results").field(stage)
			if stageNames != nil && !slices.Contains(stageNames, stage) {
				switch s := suggest(stage, stageNames); {
				case s != "":
					v.errorf(sk, "no stage named %q; did you mean %s?", stage, s)
				case len(stageNames) == 0:
					v.errorf(sk, "no stage named %q; expect the name of a [[stage]], and there are none", stage)
				default:
					v.errorf(sk, "no stage named %q; expect %s", stage, oneOf(stageNames))
				}
			}
			v.results(sk, o.Results[stage])
		}
	}
}

// once records that key belongs to override i, or reports that another
// already has it.
func (v *validator) once(seen map[string]int, name string, i int, k, overrides key) {
	switch first, ok := seen[name]; {
	case ok && first == i:
		v.errorf(k, "%q is listed twice", name)
	case ok:
		v.errorf(k, "%q is in two overrides; %s already has it", name, overrides.index(first).name)
	default:
		seen[name] = i
	}
}

var thresholdKeys = [3]string{"tag_score", "quarantine_score", "reject_score"}

// thresholds checks 0 < tag_score <= quarantine_score <= reject_score. own
// says which of the three the table at k writes; the others come from
// [policy], and a problem is reported at a key the table does write.
func (v *validator) thresholds(k key, t [3]float64, own [3]bool) {
	if v.loose {
		return
	}
	const order = "expect 0 < tag_score <= quarantine_score <= reject_score"
	if !(t[0] > 0) { // NaN too
		v.errorf(k.field(thresholdKeys[0]), "unexpected %s; %s", num(t[0]), order)
		return
	}
	for lo := range 2 {
		hi := lo + 1
		if t[hi] >= t[lo] {
			continue
		}
		switch {
		case own[hi] && own[lo]:
			v.errorf(k.field(thresholdKeys[hi]), "%s is below %s %s; %s", num(t[hi]), thresholdKeys[lo], num(t[lo]), order)
		case own[hi]:
			v.errorf(k.field(thresholdKeys[hi]), "%s is below %s %s of [policy]; %s", num(t[hi]), thresholdKeys[lo], num(t[lo]), order)
		default:
			v.errorf(k.field(thresholdKeys[lo]), "%s is above %s %s of [policy]; %s", num(t[lo]), thresholdKeys[hi], num(t[hi]), order)
		}
		return
	}
}

// tagging checks what is written into a tagged message: both end up in its
// header, where a line break would start a field of the sender's choosing.
func (v *validator) tagging(k key, subjectTag string, headers []string) {
	if !isText(subjectTag) {
		v.errorf(k.field("subject_tag"), `unexpected %q; expect text without control characters such as "[SPAM]"`, subjectTag)
	}
	for i, h := range headers {
		if !isHeaderLine(h) {
			v.errorf(k.field("tag_headers").index(i), `unexpected %q; expect a header field such as "X-Spam-Flag: YES"`, h)
		}
	}
}

func (v *validator) list(l *List, k key) {
	for i, e := range l.ClientIPs {
		if _, err := parsePrefix(e); err != nil {
			v.errorf(k.field("client_ips").index(i), `unexpected %q; expect an address such as "192.0.2.1" or a network such as "192.0.2.0/24"`, e)
		}
	}
	for i, e := range l.Helos {
		// A HELO literal is matched as written (folded), so one a client
		// writes oddly, such as "[2001:db8::1]" without its tag, can be
		// listed too.
		literal := len(e) > 2 && e[0] == '[' && e[len(e)-1] == ']' && !strings.ContainsAny(e[1:len(e)-1], "[] \t")
		p, err := address.Pattern(e)
		switch {
		case err == nil:
			v.canonical(&l.Helos[i], p)
		case literal:
			v.canonical(&l.Helos[i], address.Fold(e))
		default:
			v.errorf(k.field("helos").index(i), `unexpected %q; expect a host name such as "mail.example.org", "*.example.org" for its subdomains, or an address literal such as "[192.0.2.1]"`, e)
		}
	}
	for _, f := range []struct {
		name    string
		entries []string
	}{{"senders", l.Senders}, {"rcpts", l.Rcpts}} {
		for i, e := range f.entries {
			if a, ok := mailbox(e); ok {
				v.canonical(&f.entries[i], a)
				continue
			}
			at, rest := "", e
			if r, ok := strings.CutPrefix(e, "@"); ok {
				at, rest = "@", r
			}
			p, err := address.Pattern(rest)
			if err != nil {
				v.errorf(k.field(f.name).index(i), `unexpected %q; expect an address such as "user@example.org", a domain such as "example.org", or "*.example.org" for its subdomains`, e)
				continue
			}
			v.canonical(&f.entries[i], at+p)
		}
	}
}

// canonical writes the canonical form of a loaded entry over what was
// written. A Policy put together in Go is checked, not changed: matching
// folds its entries as it goes.
func (v *validator) canonical(entry *string, canon string) {
	if !v.loose {
		*entry = canon
	}
}

// results checks a map of result words to actions.
func (v *validator) results(k key, m map[string]string) {
	for _, result := range sortedKeys(m) {
		rk := k.field(result)
		word := m[result]
		switch _, ok := parseResultAction(word); {
		case result == "":
			v.errorf(rk, "unexpected empty result word; expect a word the stage reports such as \"fail\"")
		case word == "accept":
			v.errorf(rk, "unexpected \"accept\"; a result cannot exempt a message, [policy.allow] does; expect %s", oneOf(resultActions))
		case !ok:
			v.errorf(rk, "unexpected %q; expect %s", word, oneOf(resultActions))
		}
	}
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

// enum checks a key that takes one of the words Reference allows for it.
func (v *validator) enum(k key, got string) {
	allowed := allowed(k.dotted)
	if !slices.Contains(allowed, got) {
		v.errorf(k, "unexpected %q; expect %s", got, oneOf(allowed))
	}
}

func (v *validator) positive(k key, n int) {
	if n <= 0 {
		v.errorf(k, "unexpected %d; expect a number above 0", n)
	}
}

func (v *validator) duration(k key, d stages.Duration) {
	if d <= 0 {
		v.errorf(k, `unexpected %q; expect a duration above 0 such as "30s"`, d)
	}
}

// hostPort checks a host:port address. A listener may leave the host out
// (all addresses) and use port 0 (any free port).
func (v *validator) hostPort(k key, addr string, listen bool, example string) {
	host, port, err := net.SplitHostPort(addr)
	ok := err == nil
	if ok {
		n, err := strconv.ParseUint(port, 10, 16)
		ok = err == nil && (n > 0 || listen)
	}
	if ok && (host != "" || !listen) {
		_, err := netip.ParseAddr(host)
		ok = err == nil || address.IsHostname(host)
	}
	if !ok {
		v.errorf(k, "unexpected %q; expect host:port such as %q", addr, example)
	}
}

// mailbox returns a configured address in canonical form (address.Parse),
// refusing what no envelope can carry: control characters or white space
// in the local part.
func mailbox(s string) (string, bool) {
	a, err := address.Parse(s)
	if err != nil {
		return "", false
	}
	local, _, _ := address.Split(a)
	return a, isText(local) && !strings.ContainsAny(local, " \t")
}

// isText reports whether s has no control characters (RFC 5322 §2.2: a
// header field body is printable characters and white space; line breaks
// only fold).
func isText(s string) bool {
	for _, r := range s {
		if r < 0x20 && r != '\t' || r == 0x7f {
			return false
		}
	}
	return true
}

// isHeaderLine reports whether s is "Name: value": a field name of
// printable US-ASCII other than ":" (RFC 5322 §3.6.8) and a value of text.
func isHeaderLine(s string) bool {
	name, value, ok := strings.Cut(s, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" || strings.TrimSpace(value) == "" || !isText(value) {
		return false
	}
	for _, c := range []byte(name) {
		if c < 33 || c > 126 {
			return false
		}
	}
	return true
}

func isName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}
