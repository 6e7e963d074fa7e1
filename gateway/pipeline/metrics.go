package pipeline

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/stages"
)

// metrics are recorded by the pipeline for every stage, built in or
// plugin, so that no stage has to (or can forget to) report them.
type metrics struct {
	duration *prometheus.HistogramVec
	verdicts *prometheus.CounterVec
	errors   *prometheus.CounterVec
	timeouts *prometheus.CounterVec
}

// newMetrics makes the collectors and registers them with reg, if any.
// Unregistered collectors cost little and spare every use a nil check.
func newMetrics(reg prometheus.Registerer) (*metrics, error) {
	m := &metrics{
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
	if reg == nil {
		return m, nil
	}
	var err error
	if m.duration, err = register(reg, m.duration); err != nil {
		return nil, err
	}
	if m.verdicts, err = register(reg, m.verdicts); err != nil {
		return nil, err
	}
	if m.errors, err = register(reg, m.errors); err != nil {
		return nil, err
	}
	if m.timeouts, err = register(reg, m.timeouts); err != nil {
		return nil, err
	}
	return m, nil
}

// register registers c, or returns the collector registered already under
// the same name: a pipeline rebuilt on reload continues the old series.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) (C, error) {
	err := reg.Register(c)
	var are prometheus.AlreadyRegisteredError
	if errors.As(err, &are) {
		if old, ok := are.ExistingCollector.(C); ok {
			return old, nil
		}
	}
	if err != nil {
		return c, fmt.Errorf("register pipeline metrics: %w", err)
	}
	return c, nil
}

func (m *metrics) observe(sg *stage, ph stages.Phase, o outcome) {
	m.duration.WithLabelValues(sg.name, sg.info.Kind, ph.String()).Observe(o.took.Seconds())
	m.verdicts.WithLabelValues(sg.name, sg.info.Kind, o.res.Action.String()).Inc()
	if o.broke {
		m.errors.WithLabelValues(sg.name, sg.info.Kind).Inc()
	}
	if o.timedOut {
		m.timeouts.WithLabelValues(sg.name, sg.info.Kind).Inc()
	}
}
