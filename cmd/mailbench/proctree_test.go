package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "4242 (a b) c) S 17 4242 4242 0 -1 4194304 100 0 0 0 250 50 7 3 20 0 1 0 123 1000000 300 18446744073709551615\n"
	st, err := parseStat([]byte(line))
	if err != nil {
		t.Fatal(err)
	}
	want := procStat{pid: 4242, ppid: 17, comm: "a b) c", own: 250 + 50, reaped: 7 + 3, rss: 300}
	if st != want {
		t.Errorf("parseStat = %+v, want %+v", st, want)
	}
	for _, bad := range []string{"", "12 (x", "x (y) S 1", "12 (y) S 1 2 3"} {
		if _, err := parseStat([]byte(bad)); err == nil {
			t.Errorf("parseStat(%q): no error", bad)
		}
	}
}

func TestTreeCountsChildren(t *testing.T) {
	// A child that burns CPU and exits: its time must show in the
	// parent's tree (cutime), as a Postfix smtpd's shows in the master's.
	// The child's own CPU time, from its rusage, is what the tree must
	// have gained: wall time would depend on what else the machine runs.
	before := snapshot(os.Getpid()).seconds()
	cmd := exec.Command("sh", "-c", "i=0; while [ $i -lt 300000 ]; do i=$((i+1)); done")
	if err := cmd.Run(); err != nil {
		t.Fatalf("sh: %v", err)
	}
	// The child's own CPU as the kernel counted it, not its wall time: on
	// a loaded machine it waits for a CPU most of the time.
	spent := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	after := snapshot(os.Getpid()).seconds()
	if after-before < spent/2 {
		t.Errorf("tree CPU grew %.2fs while a child used %.2fs", after-before, spent)
	}

	sleeper := exec.Command("sleep", "5")
	if err := sleeper.Start(); err != nil {
		t.Skipf("sleep: %v", err)
	}
	defer func() { sleeper.Process.Kill(); sleeper.Wait() }()
	found := false
	for _, st := range tree(os.Getpid()) {
		found = found || st.pid == sleeper.Process.Pid
	}
	if !found {
		t.Errorf("tree(%d) misses child %d", os.Getpid(), sleeper.Process.Pid)
	}
	if rss, pss := memory(os.Getpid()); rss <= 0 || pss <= 0 || pss > rss {
		t.Errorf("memory = RSS %d, PSS %d", rss, pss)
	}
}

func TestCPUBreakdown(t *testing.T) {
	// PIDs above any pid_max, so that labels are the command names.
	const master, smtpd, cleanup, gone = 1 << 30, 1<<30 + 1, 1<<30 + 2, 1<<30 + 3
	before := cpuSnapshot{
		master: {pid: master, comm: "master", own: 10, reaped: 5},
		smtpd:  {pid: smtpd, ppid: master, comm: "smtpd", own: 100},
		gone:   {pid: gone, ppid: master, comm: "cleanup", own: 40, reaped: 2},
	}
	after := cpuSnapshot{
		master:  {pid: master, comm: "master", own: 12, reaped: 5 + 60 + 2},
		smtpd:   {pid: smtpd, ppid: master, comm: "smtpd", own: 300},
		cleanup: {pid: cleanup, ppid: master, comm: "cleanup", own: 50},
	}
	got := cpuBreakdown(before, after)
	// gone used 60-40 = 20 ticks between the snapshots, then exited.
	want := map[string]float64{"master": 0.02, "smtpd": 2, "cleanup": 0.5, reapedLabel: 0.2}
	if len(got) != len(want) {
		t.Fatalf("cpuBreakdown = %v, want %v", got, want)
	}
	sum := 0.0
	for k, v := range want {
		if d := got[k] - v; d > 1e-9 || d < -1e-9 {
			t.Errorf("%s: %v, want %v", k, got[k], v)
		}
		sum += got[k]
	}
	if total := after.seconds() - before.seconds(); total-sum > 1e-9 || sum-total > 1e-9 {
		t.Errorf("parts add up to %v, total %v", sum, total)
	}
}

func TestPause(t *testing.T) {
	// Two sleepers: one paused with its tree, one kept running.
	start := func() *exec.Cmd {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
		return cmd
	}
	a, b := start(), start()
	state := func(pid int) string {
		buf, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			t.Fatal(err)
		}
		f := strings.Fields(string(buf[bytes.LastIndexByte(buf, ')')+1:]))
		return f[0]
	}
	// waitState waits for the kernel to act on the signal.
	waitState := func(pid int, want func(string) bool, what string) {
		t.Helper()
		deadline := time.Now().Add(30 * time.Second)
		for !want(state(pid)) {
			if time.Now().After(deadline) {
				t.Fatalf("process %d: state %s, want %s", pid, state(pid), what)
			}
			time.Sleep(time.Millisecond)
		}
	}
	stopped := func(s string) bool { return s == "T" }
	resume := pause([]int{a.Process.Pid, b.Process.Pid}, []int{b.Process.Pid})
	waitState(a.Process.Pid, stopped, "T (stopped)")
	if s := state(b.Process.Pid); stopped(s) {
		t.Errorf("kept process stopped (state %s)", s)
	}
	resume()
	waitState(a.Process.Pid, func(s string) bool { return !stopped(s) }, "running or sleeping")

	// mailbench gone without resuming (SIGKILL): its watchdog resumes.
	syscall.Kill(a.Process.Pid, syscall.SIGSTOP)
	waitState(a.Process.Pid, stopped, "T (stopped)")
	dog := resumeOnExit([]int{a.Process.Pid})
	if dog == nil {
		t.Fatal("no watchdog started")
	}
	dog.orphan()
	waitState(a.Process.Pid, func(s string) bool { return !stopped(s) }, "running or sleeping, resumed by the watchdog")
}

// orphan closes mailbench's end of the watchdog's pipe, as its exit
// would.
func (d *watchdog) orphan() {
	if d != nil {
		d.w.Close()
		d.cmd.Wait()
	}
}
