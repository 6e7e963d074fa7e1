package clamdtest

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill clamd if the test binary dies without
// running its cleanups (a test timeout panics, kill -9), so no clamd is left
// behind.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
