package main

import (
	"fmt"
	"maps"
	"math"
	"slices"
	"strings"
	"time"
)

// batch is what one load against one line measured.
type batch struct {
	res         *loadResult
	delivered   int           // messages that arrived at the sink
	acceptTime  time.Duration // first connection to last 250
	deliverTime time.Duration // first 250 to last arrival at the sink
	cpu         float64       // CPU seconds of the server's tree, delivery included
	cpuBy       map[string]float64
	rss, pss    int64 // peak memory of the server's tree, bytes
}

func (bt *batch) mismatch() bool { return bt.res != nil && bt.delivered != bt.res.accepted }

// refusedText lists replies other than 250 and connection errors.
func (bt *batch) refusedText() string {
	if bt.res == nil || len(bt.res.refused) == 0 {
		return ""
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(bt.res.refused)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", k, bt.res.refused[k]))
	}
	return strings.Join(parts, ", ")
}

// stats adds up a line's batches of one message size.
type stats struct {
	batches                 int
	sent, accepted, arrived int
	acceptTime, deliverTime time.Duration
	latency                 []time.Duration
	cpu                     float64
	cpuBy                   map[string]float64 // by process, see cpuBreakdown
	rss, pss                int64
}

func newStats() *stats { return &stats{cpuBy: map[string]float64{}} }

func (s *stats) add(bt *batch) {
	s.batches++
	if bt.res != nil {
		s.sent += bt.res.sent
		s.accepted += bt.res.accepted
		s.latency = append(s.latency, bt.res.latency...)
	}
	s.arrived += bt.delivered
	s.acceptTime += bt.acceptTime
	s.deliverTime += bt.deliverTime
	s.cpu += bt.cpu
	for k, v := range bt.cpuBy {
		s.cpuBy[k] += v
	}
	s.rss, s.pss = max(s.rss, bt.rss), max(s.pss, bt.pss)
}

// acceptRate is accepted messages per second of sending, over all rounds.
func (s *stats) acceptRate() float64 { return rate(s.accepted, s.acceptTime) }

// deliverRate is messages at the sink per second from the first 250 to the
// last arrival, over all rounds.
func (s *stats) deliverRate() float64 { return rate(s.arrived, s.deliverTime) }

// cpuPer1000 is CPU seconds per 1,000 accepted messages.
func (s *stats) cpuPer1000() float64 {
	if s.accepted == 0 {
		return 0
	}
	return s.cpu / float64(s.accepted) * 1000
}

func rate(n int, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// percentile is the p-th percentile (0 < p <= 100) of d by the
// nearest-rank method; d is sorted in place.
func percentile(d []time.Duration, p float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	slices.Sort(d)
	rank := int(math.Ceil(p / 100 * float64(len(d))))
	return d[min(max(rank-1, 0), len(d)-1)]
}
