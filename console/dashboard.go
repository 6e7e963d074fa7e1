package console

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/trace"
)

type traceEvent = trace.Event

// The dashboard reads the gateway's own metrics (what /metrics serves):
// totals since the start, and, from a sample taken every minute, the
// last hour minute by minute. Sampling is one Gather a minute; nothing
// else runs while nobody looks.

// series are the lines of the chart, each a sum of counters.
var series = []struct {
	Name   string
	metric string
	labels map[string][]string // label → values summed; nil: all
}{
	{"in", "mailgate_policy_actions_total", nil},
	{"rejected", "mailgate_policy_actions_total", map[string][]string{"action": {"reject"}}},
	{"quarantined", "mailgate_policy_actions_total", map[string][]string{"action": {"quarantine"}}},
	{"deferred", "mailgate_delivery_outcomes_total", map[string][]string{"outcome": {"deferred"}}},
}

const (
	sampleEvery = time.Minute
	samplesKept = 61 // an hour of per-minute rates
)

// sampler keeps the last samples of the series.
type sampler struct {
	mu      sync.Mutex
	samples []sample
}

type sample struct {
	at     time.Time
	values []float64 // by series
}

func (s *sampler) add(at time.Time, values []float64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.samples = append(s.samples, sample{at, values})
	if len(s.samples) > samplesKept {
		s.samples = slices.Delete(s.samples, 0, len(s.samples)-samplesKept)
	}
}

func (s *sampler) all() []sample {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.samples)
}

// sampleLoop samples the series every minute until ctx ends.
func (c *Console) sampleLoop(ctx context.Context) {
	t := time.NewTicker(sampleEvery)
	defer t.Stop()
	for {
		if c.opts.Metrics != nil {
			if mfs, err := c.opts.Metrics.Gather(); err == nil {
				c.samples.add(c.opts.Now(), seriesValues(mfs))
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func seriesValues(mfs []*dto.MetricFamily) []float64 {
	out := make([]float64, len(series))
	for i, s := range series {
		out[i] = sum(mfs, s.metric, s.labels)
	}
	return out
}

// sum adds up the counters and gauges of metric whose labels are among
// those given.
func sum(mfs []*dto.MetricFamily, metric string, labels map[string][]string) float64 {
	total := 0.0
	for _, mf := range mfs {
		if mf.GetName() != metric {
			continue
		}
		for _, m := range mf.Metric {
			if !labelsMatch(m, labels) {
				continue
			}
			total += value(m)
		}
	}
	return total
}

func labelsMatch(m *dto.Metric, labels map[string][]string) bool {
	for k, vs := range labels {
		if !slices.ContainsFunc(m.Label, func(l *dto.LabelPair) bool { return l.GetName() == k && slices.Contains(vs, l.GetValue()) }) {
			return false
		}
	}
	return true
}

func value(m *dto.Metric) float64 {
	switch {
	case m.Counter != nil:
		return m.Counter.GetValue()
	case m.Gauge != nil:
		return m.Gauge.GetValue()
	}
	return 0
}

func label(m *dto.Metric, name string) string {
	for _, l := range m.Label {
		if l.GetName() == name {
			return l.GetValue()
		}
	}
	return ""
}

// Count is a number on the dashboard with what it counts.
type Count struct {
	Label string
	N     float64
	Class string // a badge class: ok, bad, warn
}

// Bar is a row of a bar chart: its width is N against the chart's
// largest.
type Bar struct {
	Label string
	N     float64
	Text  string // the value as shown
	Width int    // of 300
	Bad   bool
}

// Chart is the per-minute chart: one polyline per series, in an SVG of
// chartW × chartH drawn by the template with attributes only (the CSP
// allows no inline style).
type Chart struct {
	Lines []ChartLine
	Max   float64
	W, H  int
}

type ChartLine struct {
	Name   string
	Points string // "x,y x,y …"
	Last   float64
}

type dashboardData struct {
	Totals   []Count
	Delivery []Count
	Queue    []Count
	Chart    Chart
	Rejects  []Bar // rejects and quarantines by what decided
	Latency  []Bar // mean latency by stage
	Senders  []Bar // top senders of the last 24 hours
	Clients  []Bar // top client addresses
	Health   admin.Health
	Problem  string
}

func (c *Console) dashboard(w http.ResponseWriter, r *http.Request, v view) {
	var d dashboardData
	if c.opts.Metrics != nil {
		mfs, err := c.opts.Metrics.Gather()
		if err != nil {
			c.log.Warn("web dashboard: metrics", "err", err)
		}
		d.fromMetrics(mfs)
		d.Chart = chart(append(c.samples.all(), sample{c.opts.Now(), seriesValues(mfs)}))
	}
	d.Health = c.opts.Admin.Health()
	if err := c.top.get(r.Context(), c.opts.Now(), &d, c.topTalkers); err != nil {
		d.Problem = c.unreadable("The traces", err)
	}
	v.Title, v.Nav, v.Data, v.Refresh = "Dashboard", "dashboard", d, 30
	c.render(w, http.StatusOK, "dashboard", v)
}

func (d *dashboardData) fromMetrics(mfs []*dto.MetricFamily) {
	actions := func(as ...string) float64 {
		return sum(mfs, "mailgate_policy_actions_total", map[string][]string{"action": as})
	}
	d.Totals = []Count{
		{"decisions", sum(mfs, "mailgate_policy_actions_total", nil), ""},
		{"accepted", actions("continue", "tag", "accept"), "ok"},
		{"tagged", actions("tag"), "warn"},
		{"quarantined", actions("quarantine"), "warn"},
		{"rejected", actions("reject"), "bad"},
		{"refused for now", actions("tempfail"), "warn"},
	}
	outcome := func(o string) float64 {
		return sum(mfs, "mailgate_delivery_outcomes_total", map[string][]string{"outcome": {o}})
	}
	d.Delivery = []Count{{"relayed", outcome("relayed"), "ok"}, {"deferred", outcome("deferred"), "warn"},
		{"bounced", outcome("bounced"), "bad"}, {"expired", outcome("expired"), "bad"}}
	oldest := 0.0
	for _, mf := range mfs {
		if mf.GetName() == "mailgate_queue_oldest_age_seconds" {
			for _, m := range mf.Metric {
				oldest = max(oldest, value(m))
			}
		}
	}
	d.Queue = []Count{{"queued messages", sum(mfs, "mailgate_queue_messages", nil), ""},
		{"oldest, minutes", math.Round(oldest / 60), ""}}

	latency := map[string][2]float64{} // stage → sum, count
	for _, mf := range mfs {
		if mf.GetName() != "mailgate_stage_duration_seconds" {
			continue
		}
		for _, m := range mf.Metric {
			if h := m.Histogram; h != nil && h.GetSampleCount() > 0 {
				l := latency[label(m, "stage")]
				latency[label(m, "stage")] = [2]float64{l[0] + h.GetSampleSum(), l[1] + float64(h.GetSampleCount())}
			}
		}
	}
	for k, l := range latency {
		ms := l[0] / l[1] * 1000
		d.Latency = append(d.Latency, Bar{Label: k, N: ms, Text: fmt.Sprintf("%.1f ms", ms)})
	}
	d.Latency = bars(d.Latency, 20)
}

// bars sorts bs largest first, keeps n, and sizes them.
func bars(bs []Bar, n int) []Bar {
	slices.SortFunc(bs, func(a, b Bar) int { return cmp.Or(cmp.Compare(b.N, a.N), strings.Compare(a.Label, b.Label)) })
	if len(bs) > n {
		bs = bs[:n]
	}
	for i := range bs {
		if bs[0].N > 0 {
			bs[i].Width = max(1, int(300*bs[i].N/bs[0].N))
		}
	}
	return bs
}

const chartW, chartH = 600, 160

// chart draws the per-minute increase of each series between samples.
func chart(samples []sample) Chart {
	ch := Chart{W: chartW, H: chartH}
	if len(samples) < 2 {
		return ch
	}
	rates := make([][]float64, len(series))
	for i := 1; i < len(samples); i++ {
		minutes := samples[i].at.Sub(samples[i-1].at).Minutes()
		for s := range series {
			r := 0.0
			if minutes > 0 {
				r = max(0, samples[i].values[s]-samples[i-1].values[s]) / max(minutes, 1)
			}
			rates[s] = append(rates[s], r)
			ch.Max = max(ch.Max, r)
		}
	}
	top := max(ch.Max, 1)
	n := len(rates[0])
	if n < 2 {
		return ch // one point draws no line
	}
	for s, rs := range rates {
		var pts []string
		for i, r := range rs {
			x := chartW * (samplesKept - 1 - n + i + 1) / (samplesKept - 1)
			y := float64(chartH) - r/top*float64(chartH-10)
			pts = append(pts, fmt.Sprintf("%d,%.0f", x, y))
		}
		ch.Lines = append(ch.Lines, ChartLine{Name: series[s].Name, Points: strings.Join(pts, " "), Last: rs[len(rs)-1]})
	}
	return ch
}

// topEvery is how long the dashboard's tables of the last day are kept:
// they are read from the day's traces, which grow with the mail, and
// change little in that time. A dashboard left open, or ten of them,
// read the traces once per topEvery at most; the page reloads itself at
// that pace (its counters and chart, from the metrics, are always new).
const topEvery = 30 * time.Second

// topCache keeps the last topTalkers tables and reads them again, one
// read at a time, off every request's context.
type topCache struct {
	mu                        sync.Mutex
	at                        time.Time // when they were read; zero: never
	rejects, senders, clients []Bar
	reading                   chan struct{} // while a read runs; closed when it ends
	err                       error         // the last read's, if it failed
}

// get fills d's tables of the last day: those kept if read less than
// topEvery before now, else read by read. The read runs on its own (on
// ctx's values, not its cancellation: the store bounds it with its own
// timeout) and one at a time; every request that wants the tables waits
// for it as long as its own ctx lets it, then takes the tables kept
// before, if any. So a slow store, or a client that hangs up, holds up
// no other dashboard: the lock is never held across a read. A read that
// fails is not kept; those that waited for it get its error.
func (t *topCache) get(ctx context.Context, now time.Time, d *dashboardData, read func(context.Context, *dashboardData) error) error {
	t.mu.Lock()
	if t.at.IsZero() || now.Sub(t.at) >= topEvery || now.Before(t.at) {
		if t.reading == nil {
			t.reading = make(chan struct{})
			go t.refresh(context.WithoutCancel(ctx), now, read, t.reading)
		}
		reading := t.reading
		t.mu.Unlock()
		var err error
		select {
		case <-reading:
		case <-ctx.Done():
			err = ctx.Err()
		}
		t.mu.Lock()
		switch {
		case err == nil && t.err != nil:
			err = t.err // the read waited for
		case err != nil && !t.at.IsZero():
			err = nil // given up on: the tables before it
		}
		if err != nil {
			t.mu.Unlock()
			return err
		}
	}
	defer t.mu.Unlock()
	d.Rejects, d.Senders, d.Clients = t.rejects, t.senders, t.clients
	return nil
}

// refresh reads the tables as of now and keeps them, or the read's error.
func (t *topCache) refresh(ctx context.Context, now time.Time, read func(context.Context, *dashboardData) error, done chan struct{}) {
	var fresh dashboardData
	err := read(ctx, &fresh)
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.err = err; err == nil {
		t.at, t.rejects, t.senders, t.clients = now, fresh.Rejects, fresh.Senders, fresh.Clients
	}
	t.reading = nil
	close(done)
}

// topTalkers counts, in the last 24 hours' traces (at most the newest
// 5,000 of each), the rejects and quarantines by what decided them (a
// stage, a list, relay control), the senders and the client addresses.
func (c *Console) topTalkers(ctx context.Context, d *dashboardData) error {
	since := c.opts.Now().Add(-24 * time.Hour)
	decided := map[string]float64{}
	for _, a := range []string{"reject", "quarantine"} {
		events, err := c.opts.Traces.Search(ctx, state.TraceFilter{Since: since, Action: a, Limit: 5000})
		if err != nil {
			return err
		}
		for _, e := range events {
			by := e.Stage
			switch {
			case by == "" && strings.HasPrefix(e.Reason, "relay denied"):
				by = "relay control"
			case by == "" && strings.HasPrefix(e.Reason, "score "):
				by = "score"
			case by == "":
				by = "the gateway"
			}
			decided[by+" → "+a]++
		}
	}
	for k, n := range decided {
		d.Rejects = append(d.Rejects, Bar{Label: k, N: n, Text: fmt.Sprint(n), Bad: strings.HasSuffix(k, "reject")})
	}
	d.Rejects = bars(d.Rejects, 20)
	for _, q := range []struct {
		event string
		key   func(e traceEvent) string
		out   *[]Bar
	}{
		{"mail", func(e traceEvent) string {
			if e.From == nil || *e.From == "" {
				return "<>"
			}
			return *e.From
		}, &d.Senders},
		{"connect", func(e traceEvent) string { return e.Client }, &d.Clients},
	} {
		events, err := c.opts.Traces.Search(ctx, state.TraceFilter{Since: since, Event: q.event, Limit: 5000})
		if err != nil {
			return err
		}
		counts := map[string]float64{}
		for _, e := range events {
			counts[q.key(e)]++
		}
		var bs []Bar
		for k, n := range counts {
			bs = append(bs, Bar{Label: k, N: n, Text: fmt.Sprint(n)})
		}
		*q.out = bars(bs, 10)
	}
	return nil
}
