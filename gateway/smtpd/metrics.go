package smtpd

import (
	"crypto/tls"
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/stages"
)

// Metrics counts SMTP sessions, replies and policy actions.
type Metrics struct {
	sessions prometheus.Counter
	replies  *prometheus.CounterVec
	actions  *prometheus.CounterVec
	refusals *prometheus.CounterVec
	storeErr prometheus.Counter
}

// NewMetrics makes the SMTP metrics and registers them with reg, if any.
// Unregistered, they cost little and spare every use a nil check.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		sessions: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "smtp", Name: "sessions_total",
			Help: "SMTP sessions that greeted (HELO/EHLO).",
		}),
		replies: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "smtp", Name: "replies_total",
			Help: "Replies to MAIL, RCPT and DATA and connection refusals, by code.",
		}, []string{"code"}),
		actions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "policy", Name: "actions_total",
			Help: "Decisions of the filter chain and policy: per message at DATA, per refused recipient at RCPT.",
		}, []string{"action"}),
		refusals: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "smtp", Name: "door_refusals_total",
			Help: "Connections refused before SMTP by a door control: proxy, pregreet, pregreet_cached, pipelining.",
		}, []string{"reason"}),
		storeErr: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "smtp", Name: "door_store_errors_total",
			Help: "Reads and writes of the pre-greet cache that failed (the client was tested as unknown).",
		}),
	}
	if reg != nil {
		reg.MustRegister(m.sessions, m.replies, m.actions, m.refusals, m.storeErr)
	}
	return m
}

func (m *Metrics) reply(code int)         { m.replies.WithLabelValues(strconv.Itoa(code)).Inc() }
func (m *Metrics) action(a stages.Action) { m.actions.WithLabelValues(a.String()).Inc() }
func (m *Metrics) refused(reason string)  { m.refusals.WithLabelValues(reason).Inc() }

// tlsDescription renders a TLS connection as "TLS1.3 with cipher X".
func tlsDescription(version, suite uint16) string {
	return tls.VersionName(version) + " with cipher " + tls.CipherSuiteName(suite)
}
