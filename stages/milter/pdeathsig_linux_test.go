package milter

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill a milter the test started if the test
// binary dies without running its cleanups (a test timeout, kill -9).
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
