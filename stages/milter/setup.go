package milter

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// Config is the [stage.config] block of a milter stage.
type Config struct {
	// Address of the milter: "unix:/path", "inet:host:port",
	// "inet6:[addr]:port"; sendmail's "inet:port@host" is accepted too.
	Address        string          `json:"address"`
	ConnectTimeout stages.Duration `json:"connect_timeout"` // connect and negotiate; default 5s
	CommandTimeout stages.Duration `json:"command_timeout"` // per connect/helo/mail/rcpt/data reply; default 10s
	ContentTimeout stages.Duration `json:"content_timeout"` // per header/body/end-of-message reply; default 30s
	// DefaultAction is the verdict when the milter cannot be asked:
	// tempfail (default), accept, reject, quarantine or skip.
	DefaultAction string `json:"default_action"`
	// Macros overrides macro values sent to the milter; "" leaves a macro out.
	Macros map[string]string `json:"macros"`
}

// Defaults: below the stage's default timeout of 10s where it matters, so
// that a milter that stops answering gets default_action rather than the
// stage's on_error.
const (
	defaultConnectTimeout = 5 * time.Second
	defaultCommandTimeout = 10 * time.Second
	defaultContentTimeout = 30 * time.Second
)

// defaultActions are the values of default_action, as on_error's.
var defaultActions = map[string]stages.Action{
	"tempfail":   stages.TempFail,
	"accept":     stages.Accept,
	"reject":     stages.Reject,
	"quarantine": stages.Quarantine,
	"skip":       stages.Continue,
}

// New builds a milter stage from its config block.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{DefaultAction: "tempfail"}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	network, address, err := parseAddress(c.Address)
	if err != nil {
		return nil, fmt.Errorf("address: %w", err)
	}
	action, ok := defaultActions[c.DefaultAction]
	if !ok {
		return nil, fmt.Errorf("default_action: unexpected %q; expect tempfail, accept, reject, quarantine or skip", c.DefaultAction)
	}
	for name, v := range c.Macros {
		if name == "" || strings.ContainsAny(name, " \t\r\n\x00") || strings.ContainsRune(v, 0) {
			return nil, fmt.Errorf("macros: unexpected macro %q = %q; expect a name such as \"j\" or \"{daemon_name}\" and a value without NUL", name, v)
		}
	}
	m := &Milter{
		env:            env,
		address:        c.Address,
		network:        network,
		dialAddr:       address,
		connectTimeout: or(c.ConnectTimeout, defaultConnectTimeout),
		commandTimeout: or(c.CommandTimeout, defaultCommandTimeout),
		contentTimeout: or(c.ContentTimeout, defaultContentTimeout),
		defaultAction:  action,
		defaultName:    c.DefaultAction,
		overrides:      c.Macros,
		log:            slog.Default().With("milter", c.Address),
		pool:           pool{max: maxIdle, idle: idleTimeout},
		circuit:        circuit{threshold: circuitThreshold, retry: circuitRetry},
	}
	return m, nil
}

func or(d stages.Duration, def time.Duration) time.Duration {
	if d == 0 {
		return def
	}
	return time.Duration(d)
}

// parseAddress turns a milter address as Postfix (milter_* settings) or
// sendmail/libmilter (X= and opendkim's Socket) write it into a network
// and address for net.Dial.
func parseAddress(s string) (network, address string, err error) {
	kind, rest, ok := strings.Cut(s, ":")
	if !ok || rest == "" {
		return "", "", fmt.Errorf("unexpected %q; expect unix:/path, inet:host:port or inet6:[addr]:port", s)
	}
	switch kind {
	case "unix", "local":
		if !strings.HasPrefix(rest, "/") {
			return "", "", fmt.Errorf("unexpected %q; expect an absolute socket path such as unix:/run/milter.sock", s)
		}
		return "unix", rest, nil
	case "inet", "inet6":
		network = "tcp"
		if kind == "inet6" {
			network = "tcp6"
		}
		var host, port string
		if p, h, ok := strings.Cut(rest, "@"); ok {
			// sendmail's form: inet:port@host.
			host, port = strings.Trim(h, "[]"), p
		} else if host, port, err = net.SplitHostPort(rest); err != nil {
			return "", "", fmt.Errorf("unexpected %q; expect %s:host:port: %w", s, kind, err)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
			return "", "", fmt.Errorf("unexpected port %q in %q; expect 1 to 65535", port, s)
		}
		if host == "" {
			return "", "", fmt.Errorf("unexpected %q; the host is missing", s)
		}
		return network, net.JoinHostPort(host, port), nil
	}
	return "", "", errors.New("unexpected " + strconv.Quote(s) + "; expect unix:/path, inet:host:port or inet6:[addr]:port")
}
