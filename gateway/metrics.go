package gateway

import (
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// registerBuildInfo adds mailgate_build_info: 1, labelled with the version
// and what it was built from, so that a dashboard shows which build each
// node runs.
func registerBuildInfo(reg prometheus.Registerer, version, revision string) {
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name:        "mailgate_build_info",
		Help:        "Always 1; the labels say which build runs.",
		ConstLabels: prometheus.Labels{"version": version, "revision": revision, "goversion": runtime.Version()},
	})
	g.Set(1)
	reg.MustRegister(g)
}

// liveGatherer is what /metrics serves: the registry, less the series of
// stages no chain in use has. Stage series are shared by name across
// reloads (a kept stage continues its counters), so a stage that a reload
// removed, or that a refused reload started before it gave up, would
// otherwise stay on /metrics for the life of the process.
type liveGatherer struct{ g *Gateway }

func (l liveGatherer) Gather() ([]*dto.MetricFamily, error) {
	mfs, err := l.g.reg.Gather()
	live := l.g.liveStages()
	out := mfs[:0]
	for _, mf := range mfs {
		ms := mf.Metric[:0]
		for _, m := range mf.Metric {
			if stage, ok := stageLabel(m); !ok || live[stage] {
				ms = append(ms, m)
			}
		}
		if mf.Metric = ms; len(ms) > 0 {
			out = append(out, mf)
		}
	}
	return out, err
}

func stageLabel(m *dto.Metric) (string, bool) {
	for _, lp := range m.Label {
		if lp.GetName() == "stage" {
			return lp.GetValue(), true
		}
	}
	return "", false
}

// liveStages are the names of the stages of every chain some session may
// still use.
func (g *Gateway) liveStages() map[string]bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	live := map[string]bool{}
	for ch := range g.chains {
		for _, p := range ch.plugins {
			live[p.Name()] = true
		}
	}
	return live
}
