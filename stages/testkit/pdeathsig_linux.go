package testkit

import (
	"os/exec"
	"syscall"
)

// KillWithParent makes the kernel kill cmd's process when the test binary
// dies without running its cleanups (a test timeout panics, kill -9), so
// that no daemon outlives the test.
func KillWithParent(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
