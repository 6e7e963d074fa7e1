package spam

import (
	"errors"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"strings"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/resolver"
)

// Config is the [stage.config] block of a spam stage.
type Config struct {
	// SpamScore is the total from which the result word is "spam" rather
	// than "ham". It is informative: the policy thresholds decide.
	SpamScore *float64 `json:"spam_score"`
	// DefaultRules turns the built-in rule set on (the default) or off.
	DefaultRules *bool `json:"default_rules"`
	// Rules adds rules, or changes the score of a built-in one.
	Rules []Rule `json:"rule"`
	// URIBL lists the URI blocklists to look the domains of links up in.
	URIBL []URIBL `json:"uribl"`
	// DNSTimeout bounds one DNS query of a URIBL lookup.
	DNSTimeout stages.Duration `json:"dns_timeout"`
	// MaxTextSize is how many bytes of decoded text the rules scan.
	MaxTextSize stages.Size `json:"max_text_size"`

	// Backend is "native" (the rules only), "spamd" or "rspamd".
	Backend string `json:"backend"`
	// Address of spamd ("host:port" or "unix:/path") or rspamd
	// ("http://host:port" or "host:port").
	Address string `json:"address"`
	// Timeout bounds one backend check.
	Timeout stages.Duration `json:"timeout"`
	// BackendWeight multiplies the backend's score before it joins the total.
	BackendWeight *float64 `json:"backend_weight"`
	// BackendMaxSize: larger messages are not sent to the backend.
	BackendMaxSize stages.Size `json:"backend_max_size"`
}

// Rule is one [[stage.config.rule]]: a name, a score and exactly one of
// header (with an optional pattern), body, uri or result. A rule with only
// a name and a score changes the score of the built-in rule of that name.
type Rule struct {
	Name    string  `json:"name"`
	Score   float64 `json:"score"`
	Header  string  `json:"header"`
	Pattern string  `json:"pattern"`
	Body    string  `json:"body"`
	URI     string  `json:"uri"`
	Result  string  `json:"result"`
	Negate  bool    `json:"negate"`
}

// URIBL is one [[stage.config.uribl]]: a DNS zone listing domains.
type URIBL struct {
	Zone  string  `json:"zone"`
	Score float64 `json:"score"`
	// Returns lists the answers that count as listed, "127.0.0.2" or
	// "127.0.0.4-127.0.0.7"; Mask counts answers with any of its bits set.
	// Neither: any answer in 127.0.0.2-127.255.254.255.
	Returns []string `json:"returns"`
	Mask    uint32   `json:"mask"`
}

// Defaults.
const (
	defaultSpamScore   = 5
	defaultMaxText     = 1 << 20
	defaultTimeout     = 10 * time.Second
	defaultDNSTimeout  = 2 * time.Second
	defaultBackendSize = 1 << 20
	defaultSpamdAddr   = "127.0.0.1:783"
	defaultRspamdAddr  = "http://127.0.0.1:11333"
	cacheSize          = 4096 // URIBL answers kept for their TTL
)

var ruleName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// New builds a spam filter from its config.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	var c Config
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	s := &Spam{
		spamScore: defaultSpamScore,
		maxText:   defaultMaxText,
		weight:    1,
	}
	if c.SpamScore != nil {
		if !finite(*c.SpamScore) {
			return nil, errors.New("spam_score: expect a number")
		}
		s.spamScore = *c.SpamScore
	}
	if c.MaxTextSize > 0 {
		s.maxText = int(min(c.MaxTextSize, maxRead))
	}
	rules, err := buildRules(c.DefaultRules == nil || *c.DefaultRules, c.Rules)
	if err != nil {
		return nil, err
	}
	s.rules = rules
	for i, u := range c.URIBL {
		l, err := newList(u)
		if err != nil {
			return nil, fmt.Errorf("uribl[%d]: %w", i, err)
		}
		s.uribls = append(s.uribls, l)
	}
	if len(s.uribls) > 0 {
		timeout := time.Duration(c.DNSTimeout)
		if timeout == 0 {
			timeout = env.DNSTimeout // [dns] timeout
		}
		if timeout == 0 {
			timeout = defaultDNSTimeout
		}
		s.resolver, err = resolver.New(env.DNSServers, timeout, resolver.WithCache(cacheSize))
		if err != nil {
			return nil, fmt.Errorf("uribl: %w", err)
		}
	}
	if c.BackendWeight != nil {
		if !finite(*c.BackendWeight) {
			return nil, errors.New("backend_weight: expect a number")
		}
		s.weight = *c.BackendWeight
	}
	timeout := time.Duration(c.Timeout)
	if timeout == 0 {
		timeout = defaultTimeout
	}
	maxSize := int64(c.BackendMaxSize)
	if maxSize == 0 {
		maxSize = defaultBackendSize
	}
	switch c.Backend {
	case "", "native":
		if c.Address != "" {
			return nil, errors.New(`address: only for backend = "spamd" or "rspamd"`)
		}
	case "spamd":
		network, addr, err := spamdAddress(c.Address)
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		s.backend = &spamd{network: network, addr: addr, timeout: timeout, maxSize: maxSize}
	case "rspamd":
		u, err := rspamdURL(c.Address)
		if err != nil {
			return nil, fmt.Errorf("address: %w", err)
		}
		s.backend = newRspamd(u, timeout, maxSize)
	default:
		return nil, fmt.Errorf("backend: unexpected %q; expect native, spamd or rspamd", c.Backend)
	}
	return s, nil
}

// buildRules puts together the built-in rules (when defaults is true) and
// the configured ones. A configured rule with a built-in name replaces it,
// or with only a name and a score, keeps its test and changes its score.
func buildRules(defaults bool, conf []Rule) ([]rule, error) {
	var rules []rule
	index := map[string]int{} // rule name → position in rules
	if defaults {
		for _, rc := range defaultRules() {
			r, err := compile(rc)
			if err != nil {
				return nil, fmt.Errorf("built-in rule %s: %w", rc.Name, err)
			}
			index[r.name] = len(rules)
			rules = append(rules, r)
		}
		for _, r := range defaultChecks() {
			index[r.name] = len(rules)
			rules = append(rules, r)
		}
	}
	configured := map[string]bool{}
	for i, rc := range conf {
		if !ruleName.MatchString(rc.Name) {
			return nil, fmt.Errorf("rule[%d]: name: unexpected %q; expect letters, digits and _ such as \"SUBJ_ALL_CAPS\"", i, rc.Name)
		}
		if strings.EqualFold(rc.Name, "GTUBE") {
			return nil, fmt.Errorf("rule[%d]: name: GTUBE is built in and cannot be changed", i)
		}
		if configured[rc.Name] {
			return nil, fmt.Errorf("rule[%d] %s: name: defined twice", i, rc.Name)
		}
		configured[rc.Name] = true
		if !finite(rc.Score) {
			return nil, fmt.Errorf("rule[%d] %s: score: expect a number", i, rc.Name)
		}
		at, builtin := index[rc.Name]
		if builtin && rc.Header == "" && rc.Body == "" && rc.URI == "" && rc.Result == "" && rc.Pattern == "" && !rc.Negate {
			rules[at].score = rc.Score
			continue
		}
		r, err := compile(rc)
		if err != nil {
			return nil, fmt.Errorf("rule[%d] %s: %w", i, rc.Name, err)
		}
		if builtin {
			rules[at] = r
			continue
		}
		index[r.name] = len(rules)
		rules = append(rules, r)
	}
	return rules, nil
}

func finite(f float64) bool { return !math.IsNaN(f) && !math.IsInf(f, 0) }

// spamdAddress parses "host:port" or "unix:/path".
func spamdAddress(a string) (network, addr string, err error) {
	if a == "" {
		return "tcp", defaultSpamdAddr, nil
	}
	if path, ok := strings.CutPrefix(a, "unix:"); ok {
		if path == "" {
			return "", "", fmt.Errorf("unexpected %q; expect \"host:port\" or \"unix:/path/to/socket\"", a)
		}
		return "unix", path, nil
	}
	if _, _, err := net.SplitHostPort(a); err != nil {
		return "", "", fmt.Errorf("unexpected %q; expect \"host:port\" or \"unix:/path/to/socket\"", a)
	}
	return "tcp", a, nil
}

// rspamdURL parses "http://host:port" (or https) or "host:port" and returns
// the URL of the /checkv2 endpoint.
func rspamdURL(a string) (string, error) {
	if a == "" {
		a = defaultRspamdAddr
	}
	if !strings.Contains(a, "://") {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return "", fmt.Errorf("unexpected %q; expect \"http://host:port\" or \"host:port\"", a)
		}
		a = "http://" + a
	}
	u, err := url.Parse(a)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return "", fmt.Errorf("unexpected %q; expect \"http://host:port\" or \"host:port\"", a)
	}
	u.Path = strings.TrimSuffix(u.Path, "/") + "/checkv2"
	return u.String(), nil
}

// validZone checks a DNS zone name from the config.
func validZone(z string) error {
	if _, ok := dns.IsDomainName(z); !ok || z == "" || strings.HasPrefix(z, ".") {
		return fmt.Errorf("unexpected %q; expect a DNS zone such as \"multi.uribl.example\"", z)
	}
	return nil
}
