package greylist

import (
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"path/filepath"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/recstore"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// Config is the [stage.config] block of a greylist stage.
type Config struct {
	// Delay is how long a new triplet is refused: a retry after it passes.
	Delay stages.Duration `json:"delay"`
	// RetryWindow is how long after its first attempt a triplet may pass:
	// a retry later than that starts over.
	RetryWindow stages.Duration `json:"retry_window"`
	// Expiry is how long a passed triplet, and a network's passes, are
	// kept after their last use.
	Expiry stages.Duration `json:"expiry"`
	// AutoAllow is the number of passed triplets after which a client
	// network is no longer greylisted; 0 turns it off.
	AutoAllow int `json:"auto_allow"`
	// IPv4Prefix and IPv6Prefix are the prefix lengths of the client
	// network a triplet names.
	IPv4Prefix int `json:"ipv4_prefix"`
	IPv6Prefix int `json:"ipv6_prefix"`
	// SkipSPFPass skips greylisting for a sender whose domain's SPF policy
	// passes the client (the result of an earlier spf stage).
	SkipSPFPass bool `json:"skip_spf_pass"`
	// The allow-lists: client networks (or addresses), sender and
	// recipient addresses, and sender and recipient domains ("*.name"
	// for the subdomains of name).
	AllowNetworks         []string `json:"allow_networks"`
	AllowSenders          []string `json:"allow_senders"`
	AllowRecipients       []string `json:"allow_recipients"`
	AllowSenderDomains    []string `json:"allow_sender_domains"`
	AllowRecipientDomains []string `json:"allow_recipient_domains"`
	// MaxEntries bounds the records the store keeps (triplets and
	// networks); past it a new record takes the place of the one that
	// expires first.
	MaxEntries int `json:"max_entries"`
}

func defaultConfig() Config {
	return Config{
		Delay:       stages.Duration(5 * time.Minute),
		RetryWindow: stages.Duration(4 * time.Hour),
		Expiry:      stages.Duration(36 * 24 * time.Hour),
		AutoAllow:   5,
		IPv4Prefix:  24,
		IPv6Prefix:  64,
		SkipSPFPass: true,
		MaxEntries:  1_000_000,
	}
}

// storeDir is where the embedded store lives under the data directory.
const storeDir = "greylist"

// New builds a greylist filter from its config block, with its store in
// the data directory, or in the Redis of a [cluster] (env.Redis). A store
// that cannot be created or written, or a Redis that does not answer,
// does not stop the stage: greylisting fails open and says so in the log.
// A store of another format is refused.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	if env.DataDir == "" {
		return nil, errors.New("greylist: no data directory to keep the triplets in (data_dir)")
	}
	return newFilter(env, cfg, time.Now, slog.Default())
}

// newFilter is New with a clock and a logger: tests give theirs.
func newFilter(env stages.Env, cfg stages.Config, now func() time.Time, log *slog.Logger) (*Filter, error) {
	c := defaultConfig()
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	f := &Filter{
		delay:       time.Duration(c.Delay),
		window:      time.Duration(c.RetryWindow),
		expiry:      time.Duration(c.Expiry),
		autoAllow:   c.AutoAllow,
		v4:          c.IPv4Prefix,
		v6:          c.IPv6Prefix,
		skipSPFPass: c.SkipSPFPass,
		now:         now,
		log:         log,
		alarms:      newAlarms(log),
	}
	if err := f.check(c); err != nil {
		return nil, err
	}
	var err error
	if f.allow, err = parseAllow(c); err != nil {
		return nil, err
	}
	if env.Redis.URL != "" {
		// A cluster: every node sees the triplets every node saw.
		if f.redis, err = redisconn.Open(env.Redis, log); err != nil {
			return nil, fmt.Errorf("greylist: %w", err)
		}
		f.store = recstore.NewRedis(f.redis, "greylist", now)
		return f, nil
	}
	dir := filepath.Join(env.DataDir, storeDir)
	store, err := recstore.Open(dir, recstore.Options{
		Kind: "greylist", MaxRecords: c.MaxEntries, Now: now,
		Corrupt: func(file string, n int) {
			f.alarms.raise("corrupt", "greylist: corrupt records dropped from the store; their triplets start over",
				"file", file, "records", n)
		},
		Full: func(file string) {
			f.alarms.raise("full", "greylist: store full; records taken before they expired (raise max_entries)", "file", file)
		},
	})
	switch {
	case errors.Is(err, recstore.ErrFormat):
		return nil, fmt.Errorf("greylist: %w", err)
	case err != nil:
		// Fail open: each call tries the store again and passes mail
		// while it fails.
		log.Warn("greylist: store not usable; mail is not greylisted until it is", "dir", dir, "err", err)
	}
	f.store = store
	return f, nil
}

// Close closes the connections to Redis, if the store is there.
func (f *Filter) Close() error {
	if f.redis != nil {
		return f.redis.Close()
	}
	return nil
}

// check checks the numbers of the config.
func (f *Filter) check(c Config) error {
	positive := func(key string, d stages.Duration) error {
		if d <= 0 {
			return &stages.ConfigError{Key: key, Err: fmt.Errorf("unexpected %v; expect %s above 0", d, stages.DurationExample)}
		}
		return nil
	}
	for _, k := range []struct {
		key string
		d   stages.Duration
	}{{"delay", c.Delay}, {"retry_window", c.RetryWindow}, {"expiry", c.Expiry}} {
		if err := positive(k.key, k.d); err != nil {
			return err
		}
	}
	if c.RetryWindow <= c.Delay {
		return &stages.ConfigError{Key: "retry_window", Err: fmt.Errorf("unexpected %v; expect more than delay (%v): a retry must have time to pass", c.RetryWindow, c.Delay)}
	}
	if c.AutoAllow < 0 {
		return &stages.ConfigError{Key: "auto_allow", Err: fmt.Errorf("unexpected %d; expect 0 (off) or a number of passes", c.AutoAllow)}
	}
	if c.IPv4Prefix < 8 || c.IPv4Prefix > 32 {
		return &stages.ConfigError{Key: "ipv4_prefix", Err: fmt.Errorf("unexpected %d; expect 8 to 32", c.IPv4Prefix)}
	}
	if c.IPv6Prefix < 16 || c.IPv6Prefix > 128 {
		return &stages.ConfigError{Key: "ipv6_prefix", Err: fmt.Errorf("unexpected %d; expect 16 to 128", c.IPv6Prefix)}
	}
	if c.MaxEntries < 1000 {
		return &stages.ConfigError{Key: "max_entries", Err: fmt.Errorf("unexpected %d; expect 1000 or more", c.MaxEntries)}
	}
	return nil
}

// allowList is the parsed allow-lists.
type allowList struct {
	networks         []netip.Prefix
	senders, rcpts   []string // canonical addresses
	senderDomains    []string // canonical patterns
	recipientDomains []string
}

func parseAllow(c Config) (allowList, error) {
	var a allowList
	for i, n := range c.AllowNetworks {
		p, err := netip.ParsePrefix(n)
		if err != nil {
			addr, aerr := netip.ParseAddr(n)
			if aerr != nil {
				return a, &stages.ConfigError{Key: "allow_networks", Err: fmt.Errorf("[%d]: unexpected %q; expect a network such as \"192.0.2.0/24\" or an address", i, n)}
			}
			p = netip.PrefixFrom(addr.Unmap(), addr.Unmap().BitLen())
		}
		a.networks = append(a.networks, p.Masked())
	}
	addrs := func(key string, list []string) ([]string, error) {
		var out []string
		for i, s := range list {
			c, err := address.Parse(s)
			if err != nil {
				return nil, &stages.ConfigError{Key: key, Err: fmt.Errorf("[%d]: unexpected %q; expect an address such as \"user@example.com\"", i, s)}
			}
			out = append(out, c)
		}
		return out, nil
	}
	domains := func(key string, list []string) ([]string, error) {
		var out []string
		for i, s := range list {
			p, err := address.Pattern(s)
			if err != nil {
				return nil, &stages.ConfigError{Key: key, Err: fmt.Errorf("[%d]: unexpected %q; expect a domain such as \"example.com\" or \"*.example.com\"", i, s)}
			}
			out = append(out, p)
		}
		return out, nil
	}
	var err error
	if a.senders, err = addrs("allow_senders", c.AllowSenders); err != nil {
		return a, err
	}
	if a.rcpts, err = addrs("allow_recipients", c.AllowRecipients); err != nil {
		return a, err
	}
	if a.senderDomains, err = domains("allow_sender_domains", c.AllowSenderDomains); err != nil {
		return a, err
	}
	if a.recipientDomains, err = domains("allow_recipient_domains", c.AllowRecipientDomains); err != nil {
		return a, err
	}
	return a, nil
}

// match returns why the envelope is allow-listed, or "".
func (a allowList) match(ip netip.Addr, from, rcpt string) string {
	for _, p := range a.networks {
		if p.Contains(ip) {
			return "client in allow_networks " + p.String()
		}
	}
	for _, s := range a.senders {
		if from != "" && address.Equal(s, from) {
			return "sender in allow_senders"
		}
	}
	for _, r := range a.rcpts {
		if address.Equal(r, rcpt) {
			return "recipient in allow_recipients"
		}
	}
	if d := address.DomainOf(from); d != "" {
		for _, p := range a.senderDomains {
			if address.Match(p, d) {
				return "sender domain in allow_sender_domains " + p
			}
		}
	}
	if d := address.DomainOf(rcpt); d != "" {
		for _, p := range a.recipientDomains {
			if address.Match(p, d) {
				return "recipient domain in allow_recipient_domains " + p
			}
		}
	}
	return ""
}
