package main

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/google/pprof/profile"
)

// The CPU profiles of -profile come in segments (cmd/mailgate/profile.go):
// every mailgate process of a line begins a new one on SIGUSR1, named by
// the word in the file "segment" of its profile directory. mailbench cuts
// at the start and at the end of every batch, so each segment directory
// under -profile/<line>/ holds the profiles of one kind of load: "warmup",
// the size runs ("small", "large"), "halfpeak", and "idle" between them
// ("start" is the life of a process up to its first batch).
const halfPeakSegment = "halfpeak"

// cutProfiles ends the profile segment under way in every mailgate
// process of l and begins segment, and waits until each has. A line whose
// binary does not cut (an older -baseline build, which profiles its life
// in one file) is left alone: SIGUSR1 would end it.
func (b *bench) cutProfiles(l *line, segment string) {
	if len(l.profiles) == 0 || l.profiles[0] == "" {
		return
	}
	for _, dir := range l.profiles {
		if _, err := os.Stat(filepath.Join(dir, "start")); err != nil {
			return // no segments
		}
		if err := os.WriteFile(filepath.Join(dir, "segment"), []byte(segment), 0o644); err != nil {
			b.logf("profile: %v", err)
			return
		}
	}
	comm := filepath.Base(l.bin)
	if len(comm) > 15 {
		comm = comm[:15] // as /proc/PID/stat has it
	}
	before := map[int]int{}
	for _, st := range tree(l.roots()...) {
		if st.comm != comm {
			continue // opendkim, PostgreSQL, Redis: not mailgate's
		}
		before[st.pid] = b.segments(l, st.pid)
		syscall.Kill(st.pid, syscall.SIGUSR1)
	}
	deadline := time.Now().Add(10 * time.Second)
	for pid, n := range before {
		for b.segments(l, pid) <= n && time.Now().Before(deadline) {
			if syscall.Kill(pid, 0) != nil {
				break // exited meanwhile
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

// segments counts the profile segments process pid has begun.
func (b *bench) segments(l *line, pid int) int {
	n := 0
	for _, dir := range l.profiles {
		m, _ := filepath.Glob(filepath.Join(dir, "*", fmt.Sprintf("*-%d-*.pprof", pid)))
		n += len(m)
	}
	return n
}

// chainCost is what the CPU profiles of one segment of a line say its
// messages cost, in CPU ms per message: the gateway's processes and its
// plugin processes, each split as issue #17 splits the chain's cost.
type chainCost struct {
	messages int
	gateway  float64 // the gateway processes ("mailgate serve")
	call     float64 // of it, calling the plugins: plugins/host, its data path client and their goroutines
	plugins  float64 // the plugin processes
	filters  float64 // of it, the filters' own work (their Run)
}

// ipc is the chain's inter-process cost: the gateway's call to the
// plugins and everything the plugin processes do besides filtering
// (the data path, decoding, the Go runtime's wake-ups, GC).
func (c chainCost) ipc() float64 { return c.call + c.plugins - c.filters }

// Functions whose samples count as calling the plugins (in the gateway)
// and as filtering (in a plugin process).
const (
	hostPackage = "github.com/mailgate/mailgate/plugins/host."
	filterRun   = "github.com/mailgate/mailgate/plugins/internal/server.(*filterServer).runFilter"
)

// profileFile is <role>-<pid>-<n>.pprof: the gateway is role "serve", a
// plugin "plugin-<kinds>".
var profileFile = regexp.MustCompile(`^(.+)-(\d+)-(\d+)\.pprof$`)

// profileCost reads the profiles of segment of every instance of l and
// divides them among messages.
func profileCost(l *line, segment string, messages int) (chainCost, error) {
	c := chainCost{messages: messages}
	if messages == 0 {
		return c, fmt.Errorf("no messages in %s", segment)
	}
	var files []string
	for _, dir := range l.profiles {
		m, _ := filepath.Glob(filepath.Join(dir, segment, "*.pprof"))
		files = append(files, m...)
	}
	if len(files) == 0 {
		return c, fmt.Errorf("no profiles of %s", segment)
	}
	var ns struct{ gateway, call, plugins, filters int64 }
	for _, path := range files {
		m := profileFile.FindStringSubmatch(filepath.Base(path))
		if m == nil {
			continue
		}
		p, err := readProfile(path)
		if err != nil {
			return c, err
		}
		cpu := cpuIndex(p)
		if cpu < 0 {
			return c, fmt.Errorf("%s: no cpu samples", path)
		}
		plugin := strings.HasPrefix(m[1], "plugin")
		for _, s := range p.Sample {
			v := s.Value[cpu]
			switch {
			case plugin:
				ns.plugins += v
				if inStack(s, func(fn string) bool { return fn == filterRun }) {
					ns.filters += v
				}
			default:
				ns.gateway += v
				if inStack(s, func(fn string) bool { return strings.HasPrefix(fn, hostPackage) }) {
					ns.call += v
				}
			}
		}
	}
	per := func(v int64) float64 { return float64(v) / 1e6 / float64(messages) }
	c.gateway, c.call, c.plugins, c.filters = per(ns.gateway), per(ns.call), per(ns.plugins), per(ns.filters)
	return c, nil
}

func readProfile(path string) (*profile.Profile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	p, err := profile.Parse(f)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return p, nil
}

// cpuIndex is the index of the CPU time among p's sample values.
func cpuIndex(p *profile.Profile) int {
	for i, st := range p.SampleType {
		if st.Type == "cpu" && st.Unit == "nanoseconds" {
			return i
		}
	}
	return -1
}

func inStack(s *profile.Sample, match func(fn string) bool) bool {
	for _, loc := range s.Location {
		for _, ln := range loc.Line {
			if ln.Function != nil && match(ln.Function.Name) {
				return true
			}
		}
	}
	return false
}

// chainTable splits the chain line's CPU per message by its profiles
// (-profile): per size run and at half peak, what the filters did and
// what the hand-off between the gateway and its plugins cost.
func (r *report) chainTable(b *strings.Builder) {
	l := r.line(lineChain)
	if l == nil || len(l.profiles) == 0 || l.profiles[0] == "" {
		return
	}
	var rows []string
	row := func(what string, segment string, messages int) {
		c, err := profileCost(l, segment, messages)
		if err != nil {
			rows = append(rows, fmt.Sprintf("| %s | %s |||||||", what, escape(err.Error())))
			return
		}
		rows = append(rows, fmt.Sprintf("| %s | %d | %.3f | %.3f | %.3f | %.3f | %.3f | **%.3f** |", what, c.messages,
			c.gateway+c.plugins, c.filters, c.plugins-c.filters, c.call, c.gateway-c.call, c.ipc()))
	}
	for _, run := range r.runs {
		if s := l.stats[run.label]; s != nil && s.accepted > 0 {
			row(sizeLabel(run.size)+", full load", run.label, s.accepted)
		}
	}
	for _, h := range r.halfPeak {
		if h.line == l && h.stats.accepted > 0 {
			row(sizeLabel(r.runs[0].size)+", half peak", halfPeakSegment, h.stats.accepted)
		}
	}
	if len(rows) == 0 {
		return
	}
	fmt.Fprintf(b, "#### Line %s: where a message's CPU goes, from its profiles\n\n", lineChain)
	b.WriteString("CPU ms per message from the CPU profiles of the line's processes while it took that load (`-profile`; one directory per load under `<dir>/" + lineChain + "/`). " +
		"The hand-off is the gateway's calls to its plugins (plugins/host and its data path client) and all the plugin processes do besides their filters' `Run` (data path, decoding, the Go runtime, GC).\n\n")
	b.WriteString("| load | messages | gateway + plugins | plugins: filters' own work | plugins: the rest | gateway: calling the plugins | gateway: the rest | hand-off (IPC) |\n|---|--:|--:|--:|--:|--:|--:|--:|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}

// Targets of issue #17, which the targets table checks in every run.
const (
	targetChainSmall = 2.0 // default chain, delivered msg/s against Postfix's, 5 KiB
	targetChainLarge = 1.0 // the same at 100 KiB
	targetPlain      = 3.0 // no stages, against Postfix
	targetIPC        = 0.3 // the chain's hand-off, CPU ms per message
	targetHalfPeak   = 10 * time.Millisecond
)

// targetsTable holds the run against the targets of issue #17: the
// ratios to Postfix, the chain's hand-off and the p99 at half peak.
func (r *report) targetsTable(b *strings.Builder) {
	pf, plain, chain := r.line(linePostfix), r.line(lineMailgate), r.line(lineChain)
	if pf == nil || chain == nil {
		return
	}
	var rows []string
	vs := func(l *line, label string) (float64, bool) {
		if l == nil {
			return 0, false
		}
		s, ref := l.stats[label], pf.stats[label]
		if s == nil || ref == nil || s.batches == 0 || ref.batches == 0 || ref.deliverRate() == 0 {
			return 0, false
		}
		return s.deliverRate() / ref.deliverRate(), true
	}
	for _, run := range r.runs {
		want := targetChainSmall
		if run.label == "large" {
			want = targetChainLarge
		}
		if x, ok := vs(chain, run.label); ok {
			rows = append(rows, fmt.Sprintf("| %s delivers ≥ %.0f× Postfix, %s | ×%.2f | %s |", lineChain, want, sizeLabel(run.size), x, met(x >= want)))
		}
		if x, ok := vs(plain, run.label); ok {
			rows = append(rows, fmt.Sprintf("| %s (no stages) delivers ≥ %.0f× Postfix, %s | ×%.2f | %s |", lineMailgate, targetPlain, sizeLabel(run.size), x, met(x >= targetPlain)))
		}
	}
	if s := chain.stats["small"]; s != nil && s.accepted > 0 && len(chain.profiles) > 0 && chain.profiles[0] != "" {
		if c, err := profileCost(chain, "small", s.accepted); err == nil {
			rows = append(rows, fmt.Sprintf("| the chain's hand-off ≤ %.1f ms of CPU per message, %s, full load | %.3f ms | %s |", targetIPC, sizeLabel(r.runs[0].size), c.ipc(), met(c.ipc() <= targetIPC)))
		}
	}
	for _, h := range r.halfPeak {
		if h.line == chain && h.stats.accepted > 0 {
			p99 := percentile(h.stats.latency, 99)
			rows = append(rows, fmt.Sprintf("| %s p99 from \".\" to the reply at half peak < %s ms | %s ms | %s |", lineChain, ms(targetHalfPeak), ms(p99), met(p99 < targetHalfPeak)))
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("#### Targets of issue #17 in this run\n\n| target | measured | met |\n|---|--:|:-:|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}
