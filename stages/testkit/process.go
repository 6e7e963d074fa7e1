package testkit

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"syscall"
	"time"
)

// Process is a daemon a test runs and may kill, stop and start again: the
// engines of fault tests (redis-server, postgres). Its output is kept for
// the test's failure messages.
type Process struct {
	cmd    *exec.Cmd
	out    SyncBuffer
	exited chan struct{} // closed once the process has been waited for
}

// StartProcess starts cmd in a process group of its own, so that Kill
// reaches the children a daemon forked too, with its output captured and
// the parent-death signal set (see KillWithParent).
func StartProcess(cmd *exec.Cmd) (*Process, error) {
	p := &Process{cmd: cmd, exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = &p.out, &p.out
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Setpgid = true
	KillWithParent(cmd)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	go func() {
		cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// Exited is closed once the process has exited.
func (p *Process) Exited() <-chan struct{} { return p.exited }

// Output returns what the process has written to stdout and stderr.
func (p *Process) Output() string { return p.out.String() }

// State describes how the process exited, or "running".
func (p *Process) State() string {
	select {
	case <-p.exited:
		return p.cmd.ProcessState.String()
	default:
		return "running"
	}
}

// Kill sends SIGKILL to the process and every process of its group, as a
// crash or the OOM killer would, and waits for the process to exit.
func (p *Process) Kill() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.exited
}

// Stop sends sig and waits up to grace for the process to exit on its own
// (a clean shutdown), then kills it.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-p.exited:
		return
	default:
	}
	p.cmd.Process.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(grace):
		p.Kill()
	}
}

// ErrExited is returned by WaitReady when the process exits first.
var ErrExited = errors.New("exited")

// WaitReady calls ready until it returns nil, the process exits
// (ErrExited) or timeout passes. It polls: a daemon says nothing when it
// starts accepting connections, so trying one is the only way to know.
func (p *Process) WaitReady(timeout time.Duration, ready func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		err := ready(ctx)
		if err == nil {
			return nil
		}
		select {
		case <-p.exited:
			return fmt.Errorf("%w (%s) before it was ready: %v", ErrExited, p.cmd.ProcessState, err)
		case <-ctx.Done():
			return fmt.Errorf("not ready within %s: %v", timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}
