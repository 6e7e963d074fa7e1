package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// Env is what the rules of every config share across reloads: the state,
// its clock, the metrics and the log.
type Env struct {
	Store   Store            // nil: a Table of the rules' own
	Now     func() time.Time // nil: time.Now
	Metrics *Metrics         // nil: nothing counted
	Logger  *slog.Logger     // nil: nothing logged
}

// Rules are the [[ratelimit]] rules of one config, ready to check.
type Rules struct {
	env   Env
	rules []rule
}

type rule struct {
	policy.RateLimit
	limit  Limit
	atRcpt bool // counted at RCPT: per recipient, or by recipient
}

// New readies the rules of cfg (validated by policy) to run in env.
func New(cfg []policy.RateLimit, env Env) *Rules {
	if env.Store == nil {
		env.Store = NewTable(0)
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	if env.Logger == nil {
		env.Logger = slog.New(slog.DiscardHandler)
	}
	r := &Rules{env: env}
	for _, c := range cfg {
		r.rules = append(r.rules, rule{RateLimit: c, limit: NewLimit(c.Rate, time.Duration(c.Per), c.Burst),
			atRcpt: c.Count == "recipient" || c.Key == "recipient"})
		env.Metrics.rule(c.Name)
	}
	return r
}

// Event is what one check counts: a message at MAIL (Rcpt is ""), or a
// recipient at RCPT. Addresses are in the canonical form of package
// address.
type Event struct {
	Client stages.Client
	From   string // "" for the null sender
	Rcpt   string
}

// Exceeded is a rule that refused an event.
type Exceeded struct {
	Rule       string
	Disconnect bool   // action = "disconnect": 421, and close
	Reason     string // for the log and the trace: the rule, the key, the limit
}

// Check counts ev against each rule that counts it, in config order, and
// returns the first whose limit it exceeds, or nil. A rule counts a
// message (count = "message") at MAIL and a recipient (count =
// "recipient", or key = "recipient") at RCPT, under the key's value in
// ev; it does not count ev if ev has no such value (the null sender has
// no sender_domain), if the client is trusted and the rule exempts
// trusted clients, or if an entry of its exempt list matches. A refused
// event has counted against the rules before the one that refused it.
// A store that fails passes the event (fail open), logged and counted.
func (r *Rules) Check(ctx context.Context, ev Event) *Exceeded {
	atRcpt := ev.Rcpt != ""
	for i := range r.rules {
		ru := &r.rules[i]
		if ru.atRcpt != atRcpt || ru.exempt(ev) {
			continue
		}
		value, ok := ru.value(ev)
		if !ok {
			continue
		}
		ok, err := r.env.Store.Take(ctx, KeyOf(ru.Name, value), ru.limit, r.env.Now())
		if err != nil {
			r.env.Metrics.fault("store", 1)
			// While Redis is away, its client has said so once.
			if !errors.Is(err, redisconn.ErrDown) {
				r.env.Logger.Warn("rate limits: store failed; the event passes (fail open)", "rule", ru.Name, "err", err)
			}
			continue
		}
		if !ok {
			r.env.Metrics.exceeded(ru.Name)
			return &Exceeded{Rule: ru.Name, Disconnect: ru.Action == "disconnect",
				Reason: fmt.Sprintf("rate limit %s exceeded: %s %s over %d per %s, burst %d", ru.Name, ru.Key, value, ru.Rate, ru.Per, ru.Burst)}
		}
	}
	return nil
}

// exempt reports whether the rule leaves ev uncounted.
func (ru *rule) exempt(ev Event) bool {
	if ev.Client.Trusted && ru.ExemptTrusted {
		return true
	}
	l := &ru.Exempt
	if len(l.ClientIPs)+len(l.Helos)+len(l.Senders)+len(l.Rcpts) == 0 {
		return false
	}
	tx := &stages.Transaction{Client: ev.Client, From: ev.From}
	if ev.Rcpt != "" {
		tx.Rcpts = []string{ev.Rcpt}
	}
	for _, ph := range []stages.Phase{stages.Connect, stages.Helo, stages.Mail, stages.Rcpt} {
		if _, ok := l.Match(ph, tx); ok {
			return true
		}
	}
	return false
}

// value is what the rule counts ev under; false when ev has none.
func (ru *rule) value(ev Event) (string, bool) {
	a := ev.Client.Addr.Unmap()
	var v string
	switch ru.Key {
	case "client_ip":
		if a.IsValid() {
			v = a.String()
		}
	case "client_net":
		bits := ru.IPv6Prefix
		if a.Is4() {
			bits = ru.IPv4Prefix
		}
		if p, err := a.Prefix(bits); err == nil && a.IsValid() {
			v = p.String()
		}
	case "sender":
		if ev.From != "" {
			v = address.Identity(ev.From)
		}
	case "sender_domain":
		v = address.DomainOf(ev.From)
	case "recipient":
		v = address.Identity(ev.Rcpt)
	case "auth":
		// Set by SMTP AUTH, which mailgate does not offer yet: until it
		// does, a rule by auth counts nothing (README: Rate limits).
		v = strings.ToLower(ev.Client.AuthUser)
	}
	return v, v != ""
}

// Metrics counts what the rate limits refuse and the faults of their
// state. A nil *Metrics counts nothing.
type Metrics struct {
	refused *prometheus.CounterVec
	faults  *prometheus.CounterVec
}

// NewMetrics registers the rate-limit metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "ratelimit", Name: "exceeded_total",
			Help: "Messages (at MAIL) and recipients (at RCPT) refused by a [[ratelimit]] rule, by rule.",
		}, []string{"rule"}),
		faults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "ratelimit", Name: "store_faults_total",
			Help: "Faults of the rate-limit state, each failing open: corrupt (unreadable at start, rebuilt), save (not written), evicted (keys dropped for room), store (a check the store failed).",
		}, []string{"fault"}),
	}
	for _, f := range []string{"corrupt", "save", "evicted", "store"} {
		m.faults.WithLabelValues(f)
	}
	reg.MustRegister(m.refused, m.faults)
	return m
}

// rule makes the series of a rule exist from the start, at 0.
func (m *Metrics) rule(name string) {
	if m != nil {
		m.refused.WithLabelValues(name)
	}
}

func (m *Metrics) exceeded(name string) {
	if m != nil {
		m.refused.WithLabelValues(name).Inc()
	}
}

func (m *Metrics) fault(kind string, n int) {
	if m != nil {
		m.faults.WithLabelValues(kind).Add(float64(n))
	}
}
