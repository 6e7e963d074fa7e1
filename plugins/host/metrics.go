package host

import (
	"errors"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
)

// restartCounter returns the stage's mailgate_plugin_restarts_total. Every
// Plugin of a gateway registers the same vector; the first registration
// wins and the others share it.
func restartCounter(reg prometheus.Registerer, stage string) (prometheus.Counter, error) {
	vec := prometheus.NewCounterVec(prometheus.CounterOpts{
		Namespace: "mailgate",
		Subsystem: "plugin",
		Name:      "restarts_total",
		Help:      "Times a stage's plugin process was started again after it exited or was replaced.",
	}, []string{"stage"})
	if reg != nil {
		if err := reg.Register(vec); err != nil {
			var are prometheus.AlreadyRegisteredError
			if !errors.As(err, &are) {
				return nil, fmt.Errorf("register metrics: %w", err)
			}
			vec = are.ExistingCollector.(*prometheus.CounterVec)
		}
	}
	return vec.WithLabelValues(stage), nil
}
