package router

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/address"
)

// metrics counts delivery outcomes and reads the queue at each scrape.
type metrics struct {
	outcomes *prometheus.CounterVec
	size     *prometheus.Desc
	oldest   *prometheus.Desc
	r        *Router
}

// newMetrics makes the router's metrics and registers them with reg, if
// any. Unregistered, they cost little and spare every use a nil check.
func newMetrics(r *Router, reg prometheus.Registerer) *metrics {
	m := &metrics{
		outcomes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "mailgate", Subsystem: "delivery", Name: "outcomes_total",
			Help: "Delivery outcomes per recipient: relayed, deferred, bounced, expired.",
		}, []string{"outcome"}),
		size: prometheus.NewDesc("mailgate_queue_messages",
			"Queued messages with recipients pending for a destination (a route's first domain, or the recipient domain for MX delivery).",
			[]string{"destination"}, nil),
		oldest: prometheus.NewDesc("mailgate_queue_oldest_age_seconds",
			"Age of the oldest queued message with recipients pending for a destination.",
			[]string{"destination"}, nil),
		r: r,
	}
	// Every outcome is a series from the start, at 0, so that a rate or an
	// alert on it works before the first bounce.
	for _, o := range []string{"relayed", "deferred", "bounced", "expired"} {
		m.outcomes.WithLabelValues(o)
	}
	if reg != nil {
		reg.MustRegister(m.outcomes, m)
	}
	return m
}

func (m *metrics) outcome(o string) { m.outcomes.WithLabelValues(o).Inc() }

// Describe implements prometheus.Collector for the queue gauges.
func (m *metrics) Describe(ch chan<- *prometheus.Desc) {
	ch <- m.size
	ch <- m.oldest
}

// Collect implements prometheus.Collector: it asks the Run goroutine,
// which owns the queue, for a summary.
func (m *metrics) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	dests, err := m.r.Destinations(ctx)
	if err != nil {
		return // not running: no queue to describe
	}
	now := time.Now()
	for _, d := range dests {
		age := 0.0
		if d.Messages > 0 {
			age = now.Sub(d.Oldest).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(m.size, prometheus.GaugeValue, float64(d.Messages), d.Name)
		ch <- prometheus.MustNewConstMetric(m.oldest, prometheus.GaugeValue, age, d.Name)
	}
}

// Destination summarizes the queued messages bound for one destination.
type Destination struct {
	Name     string    // a route's first domain, or the recipient domain for MX delivery
	Messages int       // messages with recipients pending for it
	Oldest   time.Time // when the oldest of them was received
}

// Destinations summarizes the queue by destination. Every route to
// servers is one, with no messages when nothing waits for it, so that its
// gauges exist (at 0) from the start.
func (r *Router) Destinations(ctx context.Context) ([]Destination, error) {
	var out []Destination
	err := r.do(ctx, func(s *scheduler) error {
		c := r.conf.Load()
		index := map[string]int{}
		for _, rt := range c.cfg.Routes {
			if rt.MX || len(rt.Domains) == 0 {
				continue
			}
			if _, ok := index[rt.Domains[0]]; !ok {
				index[rt.Domains[0]] = len(out)
				out = append(out, Destination{Name: rt.Domains[0]})
			}
		}
		for _, it := range s.items {
			seen := map[string]bool{}
			for _, rc := range it.env.Rcpts {
				if rc.Status != spool.Pending {
					continue
				}
				name := c.destination(rc.Addr)
				if seen[name] {
					continue
				}
				seen[name] = true
				i, ok := index[name]
				if !ok {
					i = len(out)
					index[name] = i
					out = append(out, Destination{Name: name})
				}
				if out[i].Messages == 0 || it.env.Received.Before(out[i].Oldest) {
					out[i].Oldest = it.env.Received
				}
				out[i].Messages++
			}
		}
		return nil
	})
	return out, err
}

// destination names where a recipient goes, for metrics.
func (c *conf) destination(addr string) string {
	_, d, _ := address.Split(addr)
	d = address.Fold(d)
	if route, ok := c.table.Match(d); ok && !route.MX && len(route.Domains) > 0 {
		return route.Domains[0]
	}
	return d
}
