package policy

import (
	"encoding/hex"
	"net"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Trusted returns TrustedNetworks parsed; single addresses are prefixes of
// full length. The list is built by Parse and Validate, once per load, so a
// Server put together in Go without them trusts no one.
func (s Server) Trusted() []netip.Prefix { return s.trusted }

// Validate checks every field of a decoded config and returns an Errors
// listing each problem. It also prepares what the loader derives from the
// config (Server.Trusted) and lower-cases route domains.
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
	} else if !isDomain(c.Hostname) {
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
	v.policy(&c.Policy, root.field("policy"))
	v.oneOf(root.field("log").field("level"), c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf(root.field("log").field("format"), c.Log.Format, "text", "json")
	return v.errs
}

type validator struct{ reporter }

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
	v.duration(k.field("filter_timeout"), s.FilterTimeout)
	s.trusted = nil
	for i, n := range s.TrustedNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			a, aerr := netip.ParseAddr(n)
			if aerr != nil {
				v.errorf(k.field("trusted_networks").index(i), `unexpected %q; expect a network such as "10.0.0.0/8" or an address such as "192.0.2.1"`, n)
				continue
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		s.trusted = append(s.trusted, p.Masked())
	}
	switch {
	case s.TLSCert != "" && s.TLSKey == "":
		v.errorf(k.field("tls_key"), "required with tls_cert; expect the PEM file of the certificate's private key")
	case s.TLSCert == "" && s.TLSKey != "":
		v.errorf(k.field("tls_cert"), "required with tls_key; expect the PEM file of the certificate")
	}
	v.oneOf(k.field("bare_lf"), s.BareLF, "normalize", "reject")
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
	if local, domain, ok := strings.Cut(d.BounceFrom, "@"); d.BounceFrom != "MAILER-DAEMON@"+hostname && (!ok || local == "" || !isDomain(domain)) {
		v.errorf(k.field("bounce_from"), `unexpected %q; expect an address such as "MAILER-DAEMON@mx.example.test"`, d.BounceFrom)
	}
	if d.HeloName != hostname && !isDomain(d.HeloName) {
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
			// Domain names compare without regard to case (RFC 5321 §2.4).
			d = strings.ToLower(d)
			r.Domains[j] = d
			dk := rk.field("domains").index(j)
			if !isRouteDomain(d) {
				v.errorf(dk, `unexpected %q; expect a domain such as "example.test", "*.example.test" for its subdomains, or "*" for all`, d)
				continue
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
		v.oneOf(rk.field("tls"), r.TLS, "opportunistic", "required", "none")
	}
}

func (v *validator) stages(list []StageConfig, k key) {
	named := map[string]int{} // name → the stage that has it
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
		if st.Kind == "" {
			v.errorf(sk.field("kind"), `required; expect the filter's kind such as "spf" or "plugin"`)
		}
		v.oneOf(sk.field("on_error"), st.OnError, "tempfail", "accept", "reject", "quarantine", "skip")
		v.duration(sk.field("timeout"), st.Timeout)
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
}

func (v *validator) policy(p *Policy, k key) {
	const order = "expect 0 < tag_score <= quarantine_score <= reject_score"
	switch {
	case !(p.TagScore > 0): // NaN too
		v.errorf(k.field("tag_score"), "unexpected %s; %s", num(p.TagScore), order)
	case p.QuarantineScore < p.TagScore:
		v.errorf(k.field("quarantine_score"), "%s is below tag_score %s; %s", num(p.QuarantineScore), num(p.TagScore), order)
	case p.RejectScore < p.QuarantineScore:
		v.errorf(k.field("reject_score"), "%s is below quarantine_score %s; %s", num(p.RejectScore), num(p.QuarantineScore), order)
	}
}

func num(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) }

func (v *validator) oneOf(k key, got string, allowed ...string) {
	for _, a := range allowed {
		if got == a {
			return
		}
	}
	v.errorf(k, "unexpected %q; expect %s", got, oneOf(allowed))
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
		ok = err == nil || isDomain(host)
	}
	if !ok {
		v.errorf(k, "unexpected %q; expect host:port such as %q", addr, example)
	}
}

// isDomain reports whether s is a host name: labels of letters, digits and
// hyphens, not starting or ending with a hyphen (RFC 1123 §2.1).
func isDomain(s string) bool {
	if len(s) == 0 || len(s) > 253 {
		return false
	}
	for _, label := range strings.Split(s, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// isRouteDomain accepts an exact domain, "*.domain" for its subdomains and
// "*" for every domain.
func isRouteDomain(s string) bool {
	return s == "*" || isDomain(strings.TrimPrefix(s, "*."))
}

func isName(s string) bool {
	for _, c := range []byte(s) {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return s != ""
}
