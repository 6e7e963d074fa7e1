package pipeline

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/stages"
)

// Metrics are recorded by the pipeline for every stage, built in or
// plugin, so that no stage has to (or can forget to) report them.
type Metrics struct {
	duration *prometheus.HistogramVec
	verdicts *prometheus.CounterVec
	errors   *prometheus.CounterVec
	timeouts *prometheus.CounterVec
}

// NewMetrics makes the per-stage metrics and registers them with reg, if
// any. The pipelines a reload builds are given the same Metrics, so they
// continue the series.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "mailgate_stage_duration_seconds",
			Help:    "Time a stage took to answer one call, by stage, kind and phase.",
			Buckets: prometheus.DefBuckets,
		}, []string{"stage", "kind", "phase"}),
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_stage_verdicts_total",
			Help: "Verdicts of stages by action, on_error verdicts included.",
		}, []string{"stage", "kind", "action"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_stage_errors_total",
			Help: "Stage calls that broke (error, timeout, panic, invalid verdict or edit) and had on_error applied.",
		}, []string{"stage", "kind"}),
		timeouts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "mailgate_stage_timeouts_total",
			Help: "Stage calls that ran out of time; also counted in mailgate_stage_errors_total.",
		}, []string{"stage", "kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.duration, m.verdicts, m.errors, m.timeouts)
	}
	return m
}

func (m *Metrics) observe(sg *stage, ph stages.Phase, o outcome) {
	m.duration.WithLabelValues(sg.name, sg.info.Kind, ph.String()).Observe(o.took.Seconds())
	m.verdicts.WithLabelValues(sg.name, sg.info.Kind, o.res.Action.String()).Inc()
	if o.broke {
		m.errors.WithLabelValues(sg.name, sg.info.Kind).Inc()
	}
	if o.timedOut {
		m.timeouts.WithLabelValues(sg.name, sg.info.Kind).Inc()
	}
}
