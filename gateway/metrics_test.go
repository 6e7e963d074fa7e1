package gateway_test

import (
	"context"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// TestMetricsFromStart: before any mail, /metrics has the build, the queue
// gauges of every route and the error counters of every stage, at 0; a
// stage a reload removes, or that a refused reload started, leaves no
// series behind.
func TestMetricsFromStart(t *testing.T) {
	down := smtptest.NewServer(t)
	base := routeTo(down, "dest.test")
	fg := startFromFile(t, base+pluginStage("keep", testPluginBin, "", "", "")+pluginStage("drop", testPluginBin, "", "", ""))

	has := func(m map[string]float64, prefix string) bool {
		for k := range m {
			if strings.HasPrefix(k, prefix) {
				return true
			}
		}
		return false
	}
	m := scrape(t, fg.Gateway)
	for _, want := range []string{
		`mailgate_build_info{`,
		`mailgate_queue_messages{destination="dest.test"}`,
		`mailgate_queue_oldest_age_seconds{destination="dest.test"}`,
		`mailgate_delivery_outcomes_total{outcome="bounced"}`,
		`mailgate_stage_errors_total{kind="testplugin",stage="keep"}`,
		`mailgate_stage_timeouts_total{kind="testplugin",stage="drop"}`,
	} {
		if !has(m, want) {
			t.Errorf("/metrics lacks %s at start", want)
		}
	}
	if v := m[`mailgate_queue_messages{destination="dest.test"}`]; v != 0 {
		t.Errorf("queue gauge %v at start, want 0", v)
	}

	// A reload without "drop" removes its series.
	fg.write(base + pluginStage("keep", testPluginBin, "", "", ""))
	if err := fg.Reload(context.Background()); err != nil {
		t.Fatal(err)
	}
	m = scrape(t, fg.Gateway)
	if has(m, `mailgate_stage_errors_total{kind="testplugin",stage="drop"}`) || has(m, `mailgate_plugin_restarts_total{stage="drop"}`) {
		t.Errorf("/metrics keeps the series of a removed stage")
	}
	if !has(m, `mailgate_stage_errors_total{kind="testplugin",stage="keep"}`) {
		t.Errorf("/metrics lost the series of a kept stage")
	}

	// A refused reload that started "new" before another stage failed
	// leaves nothing of "new".
	fg.write(base + pluginStage("keep", testPluginBin, "", "", "") + pluginStage("new", testPluginBin, "", "", "") +
		pluginStage("broken", "/nonexistent/plugin", "", "", ""))
	if err := fg.Reload(context.Background()); err == nil {
		t.Fatal("reload with a missing plugin was not refused")
	}
	for k := range scrape(t, fg.Gateway) {
		if strings.Contains(k, `stage="new"`) || strings.Contains(k, `stage="broken"`) {
			t.Errorf("/metrics has %s after a refused reload", k)
		}
	}
}
