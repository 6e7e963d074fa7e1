package headers

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// Config is the [stage.config] block of a headers stage.
type Config struct {
	// Rules are applied in order, after the built-in options below.
	Rules []Rule `json:"rule"`
	// RemoveInternal lists glob patterns ("X-Internal-*") of fields that
	// only this gateway may write: they are removed from every message
	// first, so a sender cannot forge them.
	RemoveInternal []string `json:"remove_internal"`
	// SpamHeaders adds <prefix>Score and <prefix>Status from the verdicts
	// of the stages before this one, replacing any already there.
	SpamHeaders      bool    `json:"spam_headers"`
	SpamHeaderPrefix string  `json:"spam_header_prefix"`
	SpamThreshold    float64 `json:"spam_threshold"`
	// AuthenticationResults adds one Authentication-Results field (RFC
	// 8601) from the verdicts of the stages before this one, and removes
	// those that claim to come from this gateway.
	AuthenticationResults bool `json:"authentication_results"`
}

// Rule is one [[stage.config.rule]].
type Rule struct {
	// Action is add, set, remove or rewrite.
	Action string `json:"action"`
	// Name is the field the rule is about; remove takes NameRegex instead
	// if it should match several names.
	Name      string `json:"name"`
	NameRegex string `json:"name_regex"`
	// Value is the value add and set write, with placeholders such as
	// {client_ip}.
	Value string `json:"value"`
	// Pattern is the regular expression rewrite replaces (and remove, if
	// given, requires) in the field's value; Replacement is what replaces
	// it, with $1 for groups.
	Pattern     string `json:"pattern"`
	Replacement string `json:"replacement"`
}

// New builds a headers filter from its config block.
func New(env stages.Env, cfg stages.Config) (stages.Filter, error) {
	c := Config{SpamHeaderPrefix: "X-Spam-", SpamThreshold: 5}
	if err := cfg.Decode(&c); err != nil {
		return nil, err
	}
	if len(c.Rules) == 0 && len(c.RemoveInternal) == 0 && !c.SpamHeaders && !c.AuthenticationResults {
		return nil, errors.New("nothing to do; expect rule, remove_internal, spam_headers or authentication_results")
	}
	f := &Headers{
		hostname:    env.Hostname,
		spamHeaders: c.SpamHeaders,
		spamPrefix:  c.SpamHeaderPrefix,
		threshold:   c.SpamThreshold,
		authResults: c.AuthenticationResults,
	}
	for i, g := range c.RemoveInternal {
		re, err := glob(g)
		if err != nil {
			return nil, fmt.Errorf("remove_internal[%d]: %w", i, err)
		}
		f.internal = append(f.internal, re)
	}
	if c.SpamHeaders {
		if err := stages.CheckFieldName(c.SpamHeaderPrefix + "Status"); err != nil {
			return nil, fmt.Errorf("spam_header_prefix: unexpected %q; expect the start of a field name such as \"X-Spam-\"", c.SpamHeaderPrefix)
		}
	}
	if c.AuthenticationResults && env.Hostname == "" {
		return nil, fmt.Errorf("authentication_results: the gateway has no hostname to write as the authserv-id")
	}
	for i, r := range c.Rules {
		cr, err := compile(r)
		if err != nil {
			return nil, fmt.Errorf("rule[%d].%w", i, err)
		}
		f.rules = append(f.rules, cr)
	}
	return f, nil
}

// rule is a Rule ready to apply.
type rule struct {
	action      string
	name        string
	nameRegex   *regexp.Regexp
	value       template
	pattern     *regexp.Regexp
	replacement string
}

// keyError is a problem with one key of a rule; New prefixes the rule.
func keyError(key, format string, a ...any) error {
	return fmt.Errorf("%s: %s", key, fmt.Sprintf(format, a...))
}

func compile(r Rule) (rule, error) {
	cr := rule{action: r.Action, name: r.Name, replacement: r.Replacement}
	// The keys each action takes besides name: a key given to an action
	// that ignores it is a mistake worth reporting.
	var takes []string
	switch r.Action {
	case "add", "set":
		takes = []string{"value"}
	case "remove":
		takes = []string{"name_regex", "pattern"}
	case "rewrite":
		takes = []string{"pattern", "replacement"}
	default:
		return cr, keyError("action", "unexpected %q; expect add, set, remove or rewrite", r.Action)
	}
	for _, k := range []struct{ key, val string }{
		{"name_regex", r.NameRegex}, {"value", r.Value}, {"pattern", r.Pattern}, {"replacement", r.Replacement},
	} {
		if k.val != "" && !slices.Contains(takes, k.key) {
			return cr, keyError(k.key, "not used by action %q; it takes name, %s", r.Action, strings.Join(takes, ", "))
		}
	}
	switch {
	case r.Action == "remove" && r.Name == "" && r.NameRegex == "":
		return cr, keyError("name", "required; expect a field name, or name_regex")
	case r.Name != "" && r.NameRegex != "":
		return cr, keyError("name_regex", "unexpected with name; expect one of name and name_regex")
	case r.NameRegex == "" && r.Name == "":
		return cr, keyError("name", "required; expect a field name such as \"X-Gateway\"")
	}
	if r.Name != "" {
		if err := stages.CheckFieldName(r.Name); err != nil {
			return cr, keyError("name", "unexpected %q; expect a field name: printable ASCII without spaces or colon", r.Name)
		}
	}
	if r.NameRegex != "" {
		// Field names are case-insensitive (RFC 5322 §1.2.2).
		re, err := regexp.Compile("(?i)" + r.NameRegex)
		if err != nil {
			return cr, keyError("name_regex", "%v", err)
		}
		cr.nameRegex = re
	}
	if r.Action == "add" || r.Action == "set" {
		if r.Value == "" {
			return cr, keyError("value", "required; expect the value to write, such as \"{client_ip}\"")
		}
		t, err := parseTemplate(r.Value)
		if err != nil {
			return cr, keyError("value", "%v", err)
		}
		cr.value = t
	}
	if r.Action == "rewrite" && r.Pattern == "" {
		return cr, keyError("pattern", "required; expect a regular expression such as \"^\\\\[EXT\\\\] \"")
	}
	if r.Pattern != "" {
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return cr, keyError("pattern", "%v", err)
		}
		cr.pattern = re
	}
	if err := stages.CheckFieldText(r.Replacement); err != nil {
		return cr, keyError("replacement", "%v", err)
	}
	return cr, nil
}

// glob turns a field name pattern with * wildcards into a case-insensitive
// regular expression for the whole name.
func glob(g string) (*regexp.Regexp, error) {
	if g == "" || stages.CheckFieldName(strings.ReplaceAll(g, "*", "x")) != nil {
		return nil, fmt.Errorf("unexpected %q; expect a field name with * wildcards such as \"X-Internal-*\"", g)
	}
	parts := strings.Split(g, "*")
	for i, p := range parts {
		parts[i] = regexp.QuoteMeta(p)
	}
	return regexp.Compile("(?i)^" + strings.Join(parts, ".*") + "$")
}
