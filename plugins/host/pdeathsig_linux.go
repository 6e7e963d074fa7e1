package host

import (
	"os/exec"
	"syscall"
)

// setPdeathsig makes the kernel kill the plugin if the gateway dies without
// a chance to stop it (kill -9, OOM killer). See supervise for the thread
// it is tied to.
func setPdeathsig(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
