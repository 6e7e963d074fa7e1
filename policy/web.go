package policy

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// Web is the [web] table: the web console (package console), served by
// `mailgate serve` when Listen is set.
type Web struct {
	Listen string `toml:"listen"` // host:port; "" (default): no console
	// BaseURL is where users reach the console ("https://console.example.test"):
	// the links in digest mails start with it, and its host is one the
	// console answers to.
	BaseURL string `toml:"base_url"`
	// Hosts are further names (or addresses) the console answers to.
	// With BaseURL or Hosts, a request whose Host is none of them gets
	// 421 (DNS rebinding); with neither, the console answers to Listen's
	// host, the address connected to and, on loopback, localhost.
	Hosts []string `toml:"hosts"`
	// TrustedProxies are the reverse proxies (CIDRs or addresses) whose
	// X-Forwarded-For the console believes: the client's address, for
	// the login limits and the logs, is the last one there that is not a
	// proxy. From any other peer the header is ignored.
	TrustedProxies []string `toml:"trusted_proxies"`
	// proxies is TrustedProxies parsed by the loader.
	proxies []netip.Prefix
	// TLSCert and TLSKey are the console's own certificate; without
	// them it serves [server]'s pair when that is set, else plain HTTP,
	// which only a loopback Listen may (behind a TLS proxy).
	TLSCert string `toml:"tls_cert"`
	TLSKey  string `toml:"tls_key"`
	// SecretFile holds the key that signs sessions, CSRF tokens and the
	// end users' links; default <data_dir>/web/secret, made at the first
	// start. The nodes of a cluster must share it.
	SecretFile string          `toml:"secret_file"`
	SessionTTL stages.Duration `toml:"session_ttl"` // a login lasts this long; default 12h
	LinkTTL    stages.Duration `toml:"link_ttl"`    // an end user's link works this long; default 168h
	// EndUserRelease are stages whose holds end users may release too;
	// by default they may release only what a score threshold held,
	// never what a stage held by its own action (a virus, a file type).
	EndUserRelease []string  `toml:"enduser_release"`
	Users          []WebUser `toml:"user"`   // [[web.user]]: who may log in
	Digest         WebDigest `toml:"digest"` // [web.digest]: the end users' daily mail
}

// WebDigest is [web.digest]: a daily mail to each recipient with mail
// in the quarantine, with links to read, release, allow or block.
type WebDigest struct {
	// At is the time of day the digests go out, "07:00" in the
	// gateway's time zone; "" (default): no digests.
	At   string `toml:"at"`
	From string `toml:"from"` // the digests' sender; default "quarantine@<hostname>"
	// Subject and Template are text/template texts of the digest's
	// subject and of its body (a file); default: the console's own.
	Subject  string `toml:"subject"`
	Template string `toml:"template"`
	// Domains are the recipient domains that get digests; default: the
	// domains routed by exact or "*." routes (those of the
	// organisation, not those it relays out to).
	Domains []string `toml:"domains"`
}

// WebUser is one [[web.user]]: an account of the console.
type WebUser struct {
	Name         string       `toml:"name"`
	PasswordHash PasswordHash `toml:"password_hash"` // `mailgate user add` prints one
	Role         string       `toml:"role"`          // admin (default) or auditor (reads, changes nothing)
}

// Proxies returns TrustedProxies parsed, as Server.Proxies does.
func (w Web) Proxies() []netip.Prefix { return w.proxies }

// MaxWebUserName is the longest login name, in bytes: the console refuses
// a longer one before it counts, logs or shows it.
const MaxWebUserName = 64

// WebRoles are the roles a [[web.user]] may have.
var WebRoles = allowed("web.user.role")

// PasswordHash is a password hash in the form crypt(3) and the PHC
// string format write it: bcrypt ("$2b$12$…", as htpasswd -B makes) or
// argon2id ("$argon2id$v=19$m=65536,t=3,p=2$salt$hash", as HashPassword
// makes). The password itself is never in the config.
type PasswordHash struct {
	text string
	// argon2id's parameters, salt and hash; unset for bcrypt.
	a2         bool
	m, t       uint32
	p          uint8
	salt, hash []byte
}

const passwordHashExample = "a bcrypt hash (\"$2b$…\") or an argon2id hash (\"$argon2id$v=19$m=…\") such as `mailgate user add` prints"

// UnmarshalText parses a hash; the error does not quote it.
func (h *PasswordHash) UnmarshalText(b []byte) error {
	s := string(b)
	if strings.HasPrefix(s, "$2") {
		if _, err := bcrypt.Cost(b); err != nil {
			return fmt.Errorf("not a valid bcrypt hash; expect %s", passwordHashExample)
		}
		*h = PasswordHash{text: s}
		return nil
	}
	var v int
	var p PasswordHash
	parts := strings.Split(s, "$")
	ok := len(parts) == 6 && parts[0] == "" && parts[1] == "argon2id"
	if ok {
		_, err := fmt.Sscanf(parts[2], "v=%d", &v)
		ok = err == nil && v == argon2.Version
	}
	if ok {
		_, err := fmt.Sscanf(parts[3], "m=%d,t=%d,p=%d", &p.m, &p.t, &p.p)
		ok = err == nil && p.m >= 8*uint32(p.p) && p.t > 0 && p.p > 0
	}
	var err error
	if ok {
		p.salt, err = base64.RawStdEncoding.DecodeString(parts[4])
		ok = err == nil && len(p.salt) >= 8
	}
	if ok {
		p.hash, err = base64.RawStdEncoding.DecodeString(parts[5])
		ok = err == nil && len(p.hash) >= 16
	}
	if !ok {
		return fmt.Errorf("not a password hash; expect %s", passwordHashExample)
	}
	p.text, p.a2 = s, true
	*h = p
	return nil
}

// MarshalText returns the hash as written.
func (h PasswordHash) MarshalText() ([]byte, error) { return []byte(h.text), nil }

// String is the hash as written.
func (h PasswordHash) String() string { return h.text }

// IsZero reports whether no hash was set.
func (h PasswordHash) IsZero() bool { return h.text == "" }

// Verify reports whether password is the one hashed, in time that does
// not depend on how much of it matches.
func (h PasswordHash) Verify(password string) bool {
	switch {
	case h.text == "":
		return false
	case !h.a2:
		return bcrypt.CompareHashAndPassword([]byte(h.text), []byte(password)) == nil
	}
	got := argon2.IDKey([]byte(password), h.salt, h.t, h.m, h.p, uint32(len(h.hash)))
	return subtle.ConstantTimeCompare(got, h.hash) == 1
}

// HashPassword hashes password with argon2id, with the parameters RFC
// 9106 §4 recommends for memory-constrained use (64 MiB, 3 passes, 4
// lanes) and a random salt of 16 bytes.
func HashPassword(password string) (string, error) {
	if password == "" {
		return "", errors.New("empty password")
	}
	salt := make([]byte, 16)
	rand.Read(salt)
	const m, t, p = 64 * 1024, 3, 4
	hash := argon2.IDKey([]byte(password), salt, t, m, p, 32)
	b64 := base64.RawStdEncoding.EncodeToString
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version, m, t, p, b64(salt), b64(hash)), nil
}

// WebTLS returns the certificate and key files the console serves: its own,
// else [server]'s, else none (plain HTTP).
func (c *Config) WebTLS() (cert, key string) {
	if c.Web.TLSCert != "" {
		return c.Web.TLSCert, c.Web.TLSKey
	}
	return c.Server.TLSCert, c.Server.TLSKey
}

func (v *validator) web(c *Config, k key) {
	w := &c.Web
	if w.Listen != "" {
		v.hostPort(k.field("listen"), w.Listen, true, "127.0.0.1:8080")
	}
	if w.BaseURL != "" {
		u, err := url.Parse(w.BaseURL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Hostname() == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			v.errorf(k.field("base_url"), `unexpected %q; expect the URL users reach the console at, such as "https://console.example.test"`, w.BaseURL)
		}
	}
	w.proxies = v.networks(k.field("trusted_proxies"), w.TrustedProxies)
	for i, name := range w.EndUserRelease {
		if !slices.ContainsFunc(c.Stages, func(s StageConfig) bool { return s.Name == name }) {
			v.errorf(k.field("enduser_release").index(i), "unexpected %q; expect the name of a [[stage]]", name)
		}
	}
	for i, h := range w.Hosts {
		if _, err := netip.ParseAddr(h); err != nil && !address.IsHostname(h) {
			v.errorf(k.field("hosts").index(i), `unexpected %q; expect a host name such as "console.example.test" or an address`, h)
		}
	}
	switch {
	case w.TLSCert != "" && w.TLSKey == "":
		v.errorf(k.field("tls_key"), "required with tls_cert; expect the PEM file of the certificate's private key")
	case w.TLSCert == "" && w.TLSKey != "":
		v.errorf(k.field("tls_cert"), "required with tls_key; expect the PEM file of the certificate")
	}
	// A password or a session cookie must not cross a network in clear
	// text: plain HTTP is for a console behind a TLS proxy on this host.
	if cert, _ := c.WebTLS(); cert == "" && w.Listen != "" && !loopbackListen(w.Listen) {
		v.errorf(k.field("listen"), `%q is not a loopback address, and the console has no certificate; expect tls_cert and tls_key (or [server] tls_cert), or a loopback address such as "127.0.0.1:8080" behind a TLS proxy`, w.Listen)
	}
	v.duration(k.field("session_ttl"), w.SessionTTL)
	v.duration(k.field("link_ttl"), w.LinkTTL)
	v.digest(c, k.field("digest"))
	named := map[string]int{}
	for i, u := range w.Users {
		uk := k.field("user").index(i)
		switch first, dup := named[u.Name]; {
		case u.Name == "":
			v.errorf(uk.field("name"), `required; expect a login name such as "alice"`)
		case !isText(u.Name) || strings.ContainsAny(u.Name, " \t") || len(u.Name) > MaxWebUserName:
			v.errorf(uk.field("name"), "unexpected %q; expect a login name of up to %d characters without spaces", u.Name, MaxWebUserName)
		case dup:
			v.errorf(uk.field("name"), "%q is used twice; %s has the same name", u.Name, k.field("user").index(first).name)
		default:
			named[u.Name] = i
		}
		if u.PasswordHash.IsZero() {
			v.errorf(uk.field("password_hash"), "required; expect %s", passwordHashExample)
		}
		v.enum(uk.field("role"), u.Role)
	}
}

func (v *validator) digest(c *Config, k key) {
	d := &c.Web.Digest
	if d.At != "" {
		if _, err := time.Parse("15:04", d.At); err != nil {
			v.errorf(k.field("at"), `unexpected %q; expect a time of day such as "07:00", or "" for no digests`, d.At)
		}
		if c.Web.BaseURL == "" {
			v.errorf(k.field("at"), `digests need [web] base_url, the start of their links; expect base_url such as "https://console.example.test"`)
		}
	}
	if a, ok := mailbox(d.From); ok {
		d.From = a
	} else if d.From != "quarantine@"+c.Hostname {
		v.errorf(k.field("from"), `unexpected %q; expect an address such as "quarantine@example.test"`, d.From)
	}
	if !isText(d.Subject) {
		v.errorf(k.field("subject"), "unexpected %q; expect text without control characters", d.Subject)
	}
	for i, dom := range d.Domains {
		p, err := address.Pattern(dom)
		if err != nil {
			v.errorf(k.field("domains").index(i), `unexpected %q; expect a domain such as "example.test" or "*.example.test"`, dom)
			continue
		}
		v.canonical(&d.Domains[i], p)
	}
}

// loopbackListen reports whether listen (host:port) binds loopback only.
func loopbackListen(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}
