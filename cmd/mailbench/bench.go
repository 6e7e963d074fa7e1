package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"
)

// The lines: their names in -lines and in the report.
const (
	lineSink            = "smtp-sink"
	linePostfix         = "postfix"
	lineMailgate        = "mailgate"
	lineDoor            = "mailgate+door"
	lineChain           = "mailgate+chain"
	lineWeb             = "mailgate+chain+web"      // web.go
	lineWebPolled       = "mailgate+chain+web+poll" // web.go
	linePostfixOpendkim = "postfix+opendkim"
	lineMailgateMilter  = "mailgate+opendkim"
	// The cluster lines (cluster.go): one node, then three, sharing a
	// Redis and a PostgreSQL that examples/cluster/cluster.sh starts.
	lineCluster  = "mailgate+cluster"
	lineCluster3 = "mailgate-x3+cluster"
)

// lineNames are all the lines, in the order they run within a round and
// appear in the report (a function: no package state to change).
func lineNames() []string {
	return []string{lineSink, linePostfix, lineMailgate, lineDoor, lineChain, lineWeb, lineWebPolled, linePostfixOpendkim, lineMailgateMilter, lineCluster, lineCluster3}
}

func isLine(name string) bool { return slices.Contains(lineNames(), name) }

// baseline is the Postfix line a mailgate line is held against, "" for
// the lines that are not mailgate's.
func baseline(name string) string {
	switch name {
	case lineMailgate, lineDoor, lineChain, lineWeb, lineWebPolled, lineCluster, lineCluster3:
		return linePostfix
	case lineMailgateMilter:
		return linePostfixOpendkim
	}
	return ""
}

// line is one server under test, with the sink it delivers to.
type line struct {
	name  string       // as reported
	kind  string       // one of lineNames: what runs; name is kind, or kind + baselineSuffix
	bin   string       // the mailgate binary of a mailgate line
	addr  string       // where the client sends
	more  []string     // where else: the other nodes of a cluster line
	sink  *sink        // where the server delivers (the server itself for smtp-sink)
	roots func() []int // PIDs whose process trees are the server: CPU and memory
	alive func() error // an error once the server has died
	skip  string       // why the line does not run, "" if it does
	proxy bool         // the client opens each connection with a PROXY header
	poll  *poller      // the client loading the console's dashboard (web.go)
	stats map[string]*stats
	// profiles are the directories the line's mailgate instances write
	// their CPU profiles to (-profile): one per instance.
	profiles []string
}

// bench is one mailbench run.
type bench struct {
	opts *options
	log  io.Writer

	tools    tools
	root     string // the module's directory
	dir      string // temp dir for every config, queue and log
	mailgate string // the mailgate binary built for the run
	dns      *dnsServer
	opendkim *opendkimInstance
	engines  *engines // of the cluster lines
	stops    []func() // run in reverse order when the run ends
	lines    []*line
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.log, "mailbench: "+format+"\n", args...)
}

// onStop registers what undoes a start; every start is followed by one, so
// an error or an interrupt anywhere still stops all that was started.
func (b *bench) onStop(f func()) { b.stops = append(b.stops, f) }

func (b *bench) stopAll() {
	for i := len(b.stops) - 1; i >= 0; i-- {
		b.stops[i]()
	}
	b.stops = nil
}

// run sets the lines up, measures them and returns the report; the report
// holds what was measured before any error.
func (b *bench) run(ctx context.Context) (*report, error) {
	defer b.stopAll()
	rep := newReport(b.opts)
	if err := b.setup(ctx, rep); err != nil {
		return nil, err
	}
	rep.lines = b.lines
	runs := []sizeRun{{label: "small", messages: b.opts.messages, size: int(b.opts.size)}}
	if b.opts.large > 0 {
		runs = append(runs, sizeRun{label: "large", messages: b.opts.large, size: int(b.opts.largeSize)})
	}
	rep.runs = runs
	for _, r := range runs {
		if err := b.measure(ctx, r, rep); err != nil {
			return rep, err
		}
	}
	if b.opts.halfPeak {
		if err := b.measureHalfPeak(ctx, runs[0], rep); err != nil {
			return rep, err
		}
	}
	if b.opts.memory {
		if err := b.measureMemory(ctx, rep); err != nil {
			return rep, err
		}
	}
	return rep, nil
}

// setup builds mailgate and starts every line's servers.
func (b *bench) setup(ctx context.Context, rep *report) error {
	want := strings.Split(b.opts.lines, ",")
	var err error
	if b.tools, err = findTools(); err != nil {
		return err
	}
	if os.Geteuid() != 0 && (slices.Contains(want, linePostfix) || slices.Contains(want, linePostfixOpendkim)) {
		return errors.New("the Postfix lines start Postfix, which needs root: run as root, or choose -lines without them")
	}
	root, err := moduleRoot()
	if err != nil {
		return err
	}
	b.root = root
	if b.dir, err = os.MkdirTemp("", "mailbench-"); err != nil {
		return err
	}
	if b.opts.keep {
		b.onStop(func() { b.logf("kept %s", b.dir) })
	} else {
		b.onStop(func() { os.RemoveAll(b.dir) })
	}
	// Postfix's and opendkim's unprivileged processes must get through.
	if err := os.Chmod(b.dir, 0o755); err != nil {
		return err
	}
	if b.opts.mailgate != "" {
		if b.mailgate, err = filepath.Abs(b.opts.mailgate); err != nil {
			return err
		}
		rep.commit = "(binary " + b.opts.mailgate + ")"
	} else {
		b.mailgate = filepath.Join(b.dir, "bin", "mailgate")
		b.logf("building mailgate")
		if err := buildMailgate(ctx, root, b.mailgate); err != nil {
			return err
		}
		rep.commit = gitDescribe(ctx, root)
	}
	if b.dns, err = startDNS(); err != nil {
		return err
	}
	b.onStop(b.dns.stop)
	for _, name := range lineNames() {
		if !slices.Contains(want, name) {
			continue
		}
		ls := []*line{{name: name, kind: name, bin: b.mailgate, stats: map[string]*stats{}}}
		if b.opts.baseline != "" && isMailgateLine(name) {
			bin, err := filepath.Abs(b.opts.baseline)
			if err != nil {
				return err
			}
			ls = append(ls, &line{name: name + baselineSuffix, kind: name, bin: bin, stats: map[string]*stats{}})
		}
		for _, l := range ls {
			b.lines = append(b.lines, l)
			if err := b.startLine(ctx, l); err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				l.skip = "FAILED to start: " + err.Error()
				rep.fail("%s: %v", l.name, err)
			}
			if l.skip != "" {
				b.logf("%s: skipped: %s", l.name, l.skip)
			}
		}
	}
	return nil
}

// baselineSuffix marks the twin of a mailgate line run with the -baseline
// binary.
const baselineSuffix = " (baseline)"

func isMailgateLine(name string) bool {
	return name == lineMailgate || name == lineDoor || name == lineChain || name == lineWeb || name == lineWebPolled || name == lineMailgateMilter
}

// startLine starts a line's sink and server.
func (b *bench) startLine(ctx context.Context, l *line) error {
	s, err := startSink(ctx, b.tools.smtpSink)
	if err != nil {
		return err
	}
	b.onStop(s.stop)
	l.sink = s
	switch l.kind {
	case lineSink:
		l.addr = s.addr
		l.roots = func() []int { return []int{s.pid()} }
		l.alive = func() error { return nil }
		return nil
	case lineCluster, lineCluster3:
		return b.startCluster(ctx, l)
	case lineWeb, lineWebPolled:
		return b.startWebLine(ctx, l)
	case linePostfix, linePostfixOpendkim:
		milter := ""
		var extra []int
		if l.name == linePostfixOpendkim {
			o, err := b.startOpendkim(ctx)
			if err != nil {
				return err
			}
			milter, extra = "inet:"+o.addr, []int{o.pid()}
		}
		b.logf("starting %s", l.name)
		p, err := startPostfix(ctx, b.tools.postfix, b.dir, l.name, s.addr, milter)
		if p != nil {
			b.onStop(p.stop)
		}
		if err != nil {
			return err
		}
		l.addr = p.addr
		l.roots = func() []int { return append([]int{p.master()}, extra...) }
		l.alive = func() error {
			if p.master() == 0 {
				return errors.New("the Postfix master is gone")
			}
			return nil
		}
		return nil
	}
	serverKeys, stageBlocks, extra := "", "", []int(nil)
	switch l.kind {
	case lineDoor:
		serverKeys, stageBlocks, l.proxy = doorServer, doorBlocks, true
	case lineChain:
		var err error
		if stageBlocks, err = b.chainBlocks(l); err != nil {
			return err
		}
	case lineMailgateMilter:
		o, err := b.startOpendkim(ctx)
		if err != nil {
			return err
		}
		stageBlocks, extra = fmt.Sprintf(milterChain, o.addr), []int{o.pid()}
	}
	m, note, err := b.startMailgate(ctx, l.bin, l.name, s.addr, serverKeys, stageBlocks)
	if err != nil || note != "" {
		l.skip = note
		return err
	}
	l.addr, l.profiles = m.addr, []string{m.profile}
	l.roots = func() []int { return append([]int{m.pid()}, extra...) }
	l.alive = m.alive
	return nil
}

// startMailgate writes a config, checks it and starts mailgate with it. A
// config that "mailgate check" refuses gives a note and no instance.
func (b *bench) startMailgate(ctx context.Context, bin, name, sinkAddr, serverKeys, blocks string) (*mailgateInstance, string, error) {
	dir := filepath.Join(b.dir, name)
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	cfg, err := mailgateConfig(dir, addr, sinkAddr, b.dns.addr, serverKeys, blocks)
	if err != nil {
		return nil, "", err
	}
	if note := checkMailgate(ctx, bin, cfg); note != "" {
		return nil, note, nil
	}
	b.logf("starting %s", name)
	var env []string
	var pdir string
	if b.opts.profile != "" {
		// Every process of the line writes its CPU profile there, in
		// segments (cmd/mailgate/profile.go, cutProfiles).
		pdir, err = filepath.Abs(filepath.Join(b.opts.profile, name))
		if err != nil {
			return nil, "", fmt.Errorf("-profile: %w", err)
		}
		// This run's profiles only, not those of an earlier one.
		if err := os.RemoveAll(pdir); err != nil {
			return nil, "", fmt.Errorf("-profile: %w", err)
		}
		if err := os.MkdirAll(pdir, 0o755); err != nil {
			return nil, "", fmt.Errorf("-profile: %w", err)
		}
		env = append(env, "MAILGATE_CPUPROFILE="+pdir)
	}
	m, err := startMailgate(ctx, bin, cfg, addr, filepath.Join(dir, "mailgate.log"), env)
	if err != nil {
		return nil, "", err
	}
	m.profile = pdir
	b.onStop(m.stop)
	return m, "", nil
}

// chainBlocks are the [[stage]] blocks of the chain line: the -chain file
// or the default chain.
func (b *bench) chainBlocks(l *line) (string, error) {
	file, flag := b.opts.chain, "-chain"
	if strings.HasSuffix(l.name, baselineSuffix) && b.opts.baselineChain != "" {
		file, flag = b.opts.baselineChain, "-baseline-chain"
	}
	if file == "" {
		return defaultChain, nil
	}
	c, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("%s: %w", flag, err)
	}
	return string(c), nil
}

// startOpendkim starts the one opendkim the milter lines share.
func (b *bench) startOpendkim(ctx context.Context) (*opendkimInstance, error) {
	if b.opendkim != nil {
		return b.opendkim, nil
	}
	o, err := startOpendkim(ctx, b.tools, b.dir)
	if err != nil {
		return nil, err
	}
	b.onStop(o.stop)
	b.opendkim = o
	return o, nil
}

// sizeRun is one message size and count.
type sizeRun struct {
	label    string // key of line.stats
	messages int
	size     int
}

// measure runs r's messages through every line: a warm-up each, then the
// rounds, each line taking its turn in every round.
func (b *bench) measure(ctx context.Context, r sizeRun, rep *report) error {
	active := b.running()
	for _, l := range active {
		l.stats[r.label] = newStats()
		if b.opts.warmup == 0 {
			continue
		}
		b.logf("%s: warm-up, %d messages of %d bytes", l.name, b.opts.warmup, r.size)
		if _, err := b.batch(ctx, l, b.opts.warmup, r.size, 0, "warmup"); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			l.skip = "FAILED in warm-up: " + err.Error()
			rep.fail("%s warm-up: %v", l.name, err)
		}
	}
	for round := range b.opts.rounds {
		n := r.messages / b.opts.rounds
		if round < r.messages%b.opts.rounds {
			n++
		}
		order := b.running()
		if round%2 == 1 {
			// Reverse every other round: a trend in the machine's load
			// then hits the first and the last line alike.
			slices.Reverse(order)
		}
		for _, l := range order {
			b.logf("%s: round %d/%d, %d messages of %d bytes", l.name, round+1, b.opts.rounds, n, r.size)
			bt, err := b.batch(ctx, l, n, r.size, 0, r.label)
			if bt != nil {
				l.stats[r.label].add(bt)
				if bt.mismatch() {
					rep.fail("MISMATCH %s, %s messages, round %d: %d accepted (250) but %d arrived at the sink",
						l.name, sizeLabel(r.size), round+1, bt.res.accepted, bt.delivered)
				}
				if ref := bt.refusedText(); ref != "" {
					rep.fail("%s, %s messages, round %d: %d of %d messages not accepted: %s",
						l.name, sizeLabel(r.size), round+1, n-bt.res.accepted, n, ref)
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				l.skip = "FAILED: " + err.Error()
				rep.fail("%s: %v", l.name, err)
			}
		}
	}
	return nil
}

// running returns the lines that have not been skipped.
func (b *bench) running() []*line {
	var out []*line
	for _, l := range b.lines {
		if l.skip == "" {
			out = append(out, l)
		}
	}
	return out
}

// drainStall is how long the sink count may stand still below the number
// of accepted messages before the batch is declared a mismatch.
const drainStall = 30 * time.Second

// batch sends n messages of size bytes to a line, waits until its sink has
// them all, and measures. The line's CPU profiles (-profile) of the batch
// go into segment, those of the time between batches into "idle".
func (b *bench) batch(ctx context.Context, l *line, n, size int, rate float64, segment string) (*batch, error) {
	if err := l.alive(); err != nil {
		return nil, err
	}
	b.cutProfiles(l, segment)
	defer b.cutProfiles(l, "idle")
	if l.poll != nil {
		l.poll.on.Store(true)
		defer l.poll.on.Store(false)
	}
	roots := l.roots()
	before, _ := l.sink.received()
	cpu0 := snapshot(roots...)
	// Not at half peak, where no memory is reported: reading
	// smaps_rollup walks a process's page tables under its mmap lock,
	// four times a second, while its latency is measured.
	var mem *sampler
	if segment != halfPeakSegment {
		mem = sample(ctx, 250*time.Millisecond, roots...)
	}
	ld := load{
		addr: l.addr, more: l.more, messages: n, size: size, sessions: b.opts.sessions, perConn: b.opts.perConn, rate: rate, proxy: l.proxy,
		from: "bench@" + senderDomain, to: "user@" + recipientDomain,
	}
	res, err := ld.run(ctx)
	bt := &batch{res: res}
	if res != nil {
		got, last := l.sink.waitFor(ctx, before+res.accepted, drainStall)
		bt.delivered = got - before
		bt.acceptTime = res.lastAccept.Sub(res.start)
		if bt.delivered > 0 {
			bt.deliverTime = last.Sub(res.firstAccept)
		}
	}
	cpu1 := snapshot(roots...)
	bt.cpu, bt.cpuBy = cpu1.seconds()-cpu0.seconds(), cpuBreakdown(cpu0, cpu1)
	if mem != nil {
		bt.rss, bt.pss = mem.end()
	}
	if err == nil {
		err = l.alive()
	}
	return bt, err
}

// measureHalfPeak sends to the chain line (and for comparison to the
// Postfix and plain mailgate lines) at half the rate each took at its peak,
// and reports the p99: the latency a client sees on a gateway that is
// busy but not saturated. The lines take turns in rounds here too.
func (b *bench) measureHalfPeak(ctx context.Context, r sizeRun, rep *report) error {
	var hp []*halfPeak
	for _, l := range b.running() {
		full := l.stats[r.label]
		// l.kind: a -baseline twin is measured too, a before/after of the p99.
		if (l.kind == linePostfix || l.kind == lineMailgate || l.kind == lineChain) && full != nil && full.acceptRate() > 0 {
			hp = append(hp, &halfPeak{line: l, rate: full.acceptRate() / 2, stats: newStats(), full: full})
		}
	}
	// The lines not measured here are paused meanwhile, and what the
	// earlier loads left in the page cache is written back first. The
	// p99 is decided by a few wake-ups and flushes that wait: on two
	// cores shared with ten idle servers (PostgreSQL's checkpointer,
	// Redis's timers, Postfix's queue manager, mailgate nodes' heartbeats)
	// and their writeback it measured the machine's neighbours, as a
	// gateway in production does not have. Every line measured here gets
	// the same quiet.
	var others, measured []int
	for _, l := range b.running() {
		switch {
		case slices.ContainsFunc(hp, func(h *halfPeak) bool { return h.line == l }):
			measured = append(measured, l.roots()...)
		case l.alive() == nil:
			// Not a line that died: its PIDs could be another
			// program's by now.
			others = append(others, l.roots()...)
		}
	}
	resume := pause(others, measured)
	defer resume()
	syscall.Sync()
	total := max(200, r.messages/4)
	for round := range b.opts.rounds {
		n := total / b.opts.rounds
		if round < total%b.opts.rounds {
			n++
		}
		order := slices.Clone(hp)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, h := range order {
			if h.line.skip != "" {
				continue
			}
			b.logf("%s: round %d/%d, %d messages at %.0f msg/s (half its peak)", h.line.name, round+1, b.opts.rounds, n, h.rate)
			bt, err := b.batch(ctx, h.line, n, r.size, h.rate, halfPeakSegment)
			if bt != nil {
				h.stats.add(bt)
				if bt.mismatch() {
					rep.fail("MISMATCH %s at half peak: %d accepted (250) but %d arrived at the sink", h.line.name, bt.res.accepted, bt.delivered)
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				h.line.skip = "FAILED at half peak: " + err.Error()
				rep.fail("%s at half peak: %v", h.line.name, err)
			}
		}
	}
	for _, h := range hp {
		rep.halfPeak = append(rep.halfPeak, *h)
	}
	return nil
}
