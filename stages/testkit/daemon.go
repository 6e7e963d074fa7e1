package testkit

import (
	"context"
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Daemon is a server a test runs and a fault test kills, stops and starts
// again in the same place, on the same port and data: the engines
// (redis-server, postgres) of packages redistest and pgtest.
type Daemon struct {
	t    testing.TB
	spec DaemonSpec

	mu   sync.Mutex
	proc *Process // nil while stopped
}

// DaemonSpec says how to run a daemon.
type DaemonSpec struct {
	Name string // the program, for messages
	// Command makes the command that runs the daemon, afresh for each
	// start.
	Command func() *exec.Cmd
	// Ready returns nil once the daemon serves (see Process.WaitReady);
	// StartTimeout bounds the wait.
	Ready        func(context.Context) error
	StartTimeout time.Duration
	// StopSignal asks the daemon to shut down cleanly; StopTimeout
	// bounds the wait before it is killed.
	StopSignal  syscall.Signal
	StopTimeout time.Duration
}

// NewDaemon returns the daemon spec describes, not started.
func NewDaemon(t testing.TB, spec DaemonSpec) *Daemon { return &Daemon{t: t, spec: spec} }

// Launch starts the daemon and returns once it is ready; it stops when
// the test ends. It tries three times, calling place (if not nil) before
// each: a free port it picks may be taken by someone else before the
// daemon binds it. It fails the test if no try succeeds.
func (d *Daemon) Launch(place func()) {
	d.t.Helper()
	var err error
	for range 3 {
		if place != nil {
			place()
		}
		if err = d.start(); err == nil {
			d.t.Cleanup(d.Stop)
			return
		}
	}
	d.t.Fatalf("%s: %v", d.spec.Name, err)
}

// Kill kills the daemon and every process of its group with SIGKILL, as
// a crash would, and waits until it is gone. Restart starts it again.
func (d *Daemon) Kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		d.proc.Kill()
		d.proc = nil
	}
}

// Stop shuts the daemon down with its StopSignal and waits until it is
// gone. Later calls do nothing; Restart starts it again.
func (d *Daemon) Stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		d.proc.Stop(d.spec.StopSignal, d.spec.StopTimeout)
		d.proc = nil
	}
}

// Restart starts the daemon again in the same place after Kill or Stop,
// and returns once it is ready. It fails the test if it cannot (someone
// else took the port meanwhile, say).
func (d *Daemon) Restart() {
	d.t.Helper()
	if err := d.start(); err != nil {
		d.t.Fatalf("%s: restart: %v", d.spec.Name, err)
	}
}

// Log returns what the running daemon has written, for a failure
// message.
func (d *Daemon) Log() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc == nil {
		return "(" + d.spec.Name + " is not running)"
	}
	return d.proc.Output()
}

func (d *Daemon) start() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.proc != nil {
		return fmt.Errorf("%s is already running", d.spec.Name)
	}
	p, err := StartProcess(d.spec.Command())
	if err != nil {
		return err
	}
	if err := p.WaitReady(d.spec.StartTimeout, d.spec.Ready); err != nil {
		p.Kill()
		return fmt.Errorf("%w\n%s", err, p.Output())
	}
	d.proc = p
	return nil
}
