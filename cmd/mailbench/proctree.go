package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
)

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat: 100 on
// every Linux architecture Go runs on (sysconf(_SC_CLK_TCK) needs cgo).
const clockTicks = 100

// procStat is what mailbench reads of one /proc/PID/stat (proc(5)).
type procStat struct {
	pid, ppid int
	// cpu is utime+stime+cutime+cstime in ticks: the process's own CPU and
	// that of the children it has reaped, so a server's tree loses nothing
	// when a worker exits during a run (Postfix recycles its smtpd).
	cpu int64
	rss int64 // resident pages
}

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
		pid:  pid,
		ppid: int(num(4)),
		cpu:  num(14) + num(15) + num(16) + num(17),
		rss:  num(24),
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

// cpuSeconds is the CPU time the trees under roots have used so far.
func cpuSeconds(roots ...int) float64 {
	var ticks int64
	for _, st := range tree(roots...) {
		ticks += st.cpu
	}
	return float64(ticks) / clockTicks
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
