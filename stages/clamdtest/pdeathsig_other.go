//go:build !linux

package clamdtest

import "os/exec"

// setPdeathsig does nothing: only Linux can tie a child's life to its
// parent's. Elsewhere a clamd may outlive a test binary killed with SIGKILL.
func setPdeathsig(*exec.Cmd) {}
