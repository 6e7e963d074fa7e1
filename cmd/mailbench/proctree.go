package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat: 100 on
// every Linux architecture Go runs on (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

// procStat is what mailbench reads of one /proc/PID/stat (proc(5)).
type procStat struct {
	pid, ppid int
	comm      string // the command name, at most 15 bytes
	// own is utime+stime, reaped is cutime+cstime, in ticks: the process's
	// own CPU and that of the children it has waited for, so a server's
	// tree loses nothing when a worker exits during a run (Postfix
	// recycles its smtpd processes).
	own, reaped int64
	rss         int64 // resident pages
}

func (st procStat) cpu() int64 { return st.own + st.reaped }

// parseStat parses the text of /proc/PID/stat. The command name, field 2,
// is in parentheses and may itself hold spaces and ")": the fields after it
// start after the last ")".
func parseStat(b []byte) (procStat, error) {
	open, end := bytes.IndexByte(b, '('), bytes.LastIndexByte(b, ')')
	if open < 0 || end < open {
		return procStat{}, fmt.Errorf("malformed stat %q", b)
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procStat{}, fmt.Errorf("malformed stat %q", b)
	}
	// f[0] is field 3 (state), so field k is f[k-3].
	f := strings.Fields(string(b[end+1:]))
	if len(f) < 22 {
		return procStat{}, fmt.Errorf("malformed stat %q", b)
	}
	num := func(k int) int64 {
		n, _ := strconv.ParseInt(f[k-3], 10, 64)
		return n
	}
	return procStat{
		pid:    pid,
		ppid:   int(num(4)),
		comm:   string(b[open+1 : end]),
		own:    num(14) + num(15),
		reaped: num(16) + num(17),
		rss:    num(24),
	}, nil
}

// tree returns the stats of the processes under the given roots, the
// roots included.
func tree(roots ...int) []procStat {
	dirs, _ := filepath.Glob("/proc/[0-9]*/stat")
	all := make(map[int]procStat, len(dirs))
	children := map[int][]int{}
	for _, d := range dirs {
		b, err := os.ReadFile(d)
		if err != nil {
			continue // exited meanwhile
		}
		st, err := parseStat(b)
		if err != nil {
			continue
		}
		all[st.pid] = st
		children[st.ppid] = append(children[st.ppid], st.pid)
	}
	var out []procStat
	seen := map[int]bool{}
	queue := append([]int(nil), roots...)
	for len(queue) > 0 {
		p := queue[0]
		queue = queue[1:]
		st, ok := all[p]
		if !ok || seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, st)
		queue = append(queue, children[p]...)
	}
	return out
}

// cpuSnapshot is the CPU of each process of a tree at one time.
type cpuSnapshot map[int]procStat

func snapshot(roots ...int) cpuSnapshot {
	s := cpuSnapshot{}
	for _, st := range tree(roots...) {
		s[st.pid] = st
	}
	return s
}

// seconds is the CPU time the tree has used so far, reaped children
// included.
func (s cpuSnapshot) seconds() float64 {
	var ticks int64
	for _, st := range s {
		ticks += st.cpu()
	}
	return float64(ticks) / clockTicks
}

// reapedLabel names the CPU of processes that exited between two
// snapshots (and were waited for by a process of the tree).
const reapedLabel = "exited processes"

// cpuBreakdown splits the CPU seconds used between two snapshots of a tree
// by process: "smtpd", "cleanup", "mailgate plugin spam"... The parts add
// up to the tree's total.
func cpuBreakdown(before, after cpuSnapshot) map[string]float64 {
	ticks := map[string]int64{}
	for pid, a := range after {
		own := a.own
		if b, ok := before[pid]; ok && b.comm == a.comm {
			own -= b.own
			ticks[reapedLabel] += a.reaped - b.reaped
		} else {
			ticks[reapedLabel] += a.reaped
		}
		ticks[label(a)] += own
	}
	for pid, b := range before {
		if _, ok := after[pid]; !ok {
			// Its whole life is in its parent's reaped time now; the part
			// before the first snapshot was not used in between.
			ticks[reapedLabel] -= b.own + b.reaped
		}
	}
	out := map[string]float64{}
	for k, v := range ticks {
		if v != 0 {
			out[k] = float64(v) / clockTicks
		}
	}
	return out
}

// label names a process for the CPU breakdown: its command name, or for
// mailgate's plugin processes the kind they serve (the kinds, joined by
// "+", of a process group).
func label(st procStat) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", st.pid))
	if err != nil {
		return st.comm
	}
	args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
	if len(args) >= 3 && args[1] == "plugin" {
		return filepath.Base(args[0]) + " plugin " + strings.Join(args[2:], "+")
	}
	return st.comm
}

// memory is the resident memory of the trees under roots, in bytes: RSS
// summed over the processes, and PSS (proportional set size, shared pages
// divided among their users), which does not count the shared libraries of
// twenty Postfix processes twenty times.
func memory(roots ...int) (rss, pss int64) {
	page := int64(os.Getpagesize())
	for _, st := range tree(roots...) {
		rss += st.rss * page
		pss += smapsPss(st.pid)
	}
	return rss, pss
}

// smapsPss reads Pss from /proc/PID/smaps_rollup, in bytes.
func smapsPss(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/smaps_rollup", pid))
	if err != nil {
		return 0
	}
	for line := range strings.Lines(string(b)) {
		if rest, ok := strings.CutPrefix(line, "Pss:"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return kb << 10
		}
	}
	return 0
}

// sampler records the peak memory of process trees while a run lasts.
type sampler struct {
	stop chan struct{}
	wg   sync.WaitGroup

	mu            sync.Mutex
	peakRSS, peak int64 // peak RSS sum and peak PSS sum
}

// sample starts sampling the trees under roots every interval until end.
func sample(ctx context.Context, interval time.Duration, roots ...int) *sampler {
	s := &sampler{stop: make(chan struct{})}
	s.wg.Go(func() {
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			rss, pss := memory(roots...)
			s.mu.Lock()
			s.peakRSS, s.peak = max(s.peakRSS, rss), max(s.peak, pss)
			s.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-s.stop:
				return
			case <-t.C:
			}
		}
	})
	return s
}

// end stops sampling and returns the peaks (RSS, PSS) in bytes.
func (s *sampler) end() (rss, pss int64) {
	close(s.stop)
	s.wg.Wait()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peakRSS, s.peak
}

// pause stops (SIGSTOP) the process trees under roots, but not those
// under keep, and returns what resumes them (SIGCONT).
func pause(roots, keep []int) (resume func()) {
	spare := map[int]bool{}
	for _, st := range tree(keep...) {
		spare[st.pid] = true
	}
	var stopped []int
	for _, st := range tree(roots...) {
		if !spare[st.pid] && syscall.Kill(st.pid, syscall.SIGSTOP) == nil {
			stopped = append(stopped, st.pid)
		}
	}
	dog := resumeOnExit(stopped)
	return func() {
		dog.cancel()
		for _, pid := range stopped {
			syscall.Kill(pid, syscall.SIGCONT)
		}
	}
}

// watchdog is a process that sends SIGCONT to the processes mailbench
// paused once mailbench is gone: a SIGKILL (no handler runs) would leave
// them stopped for ever, servers that hold their ports. It reads a pipe
// whose only writer is mailbench; the kernel closes it when mailbench
// exits, however it exits.
type watchdog struct {
	cmd *exec.Cmd
	w   *os.File // mailbench's end of the pipe
}

// resumeOnExit starts the watchdog of pids; on failure there is none
// (the processes are resumed by mailbench alone, as before).
func resumeOnExit(pids []int) *watchdog {
	if len(pids) == 0 {
		return nil
	}
	args := make([]string, len(pids))
	for i, pid := range pids {
		args[i] = strconv.Itoa(pid)
	}
	r, w, err := os.Pipe()
	if err != nil {
		return nil
	}
	defer r.Close()
	cmd := exec.Command("sh", "-c", `read x; kill -CONT "$@"`, "watchdog")
	cmd.Args = append(cmd.Args, args...)
	cmd.Stdin = r
	// Its own process group: a Ctrl-C at the terminal stops mailbench,
	// not the watchdog that must outlive it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return nil
	}
	return &watchdog{cmd: cmd, w: w}
}

// cancel stops the watchdog without it sending anything: mailbench
// resumes the processes itself.
func (d *watchdog) cancel() {
	if d == nil {
		return
	}
	d.cmd.Process.Kill()
	d.cmd.Wait()
	d.w.Close()
}
