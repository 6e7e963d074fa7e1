//go:build !linux

package host

import "os/exec"

// setPdeathsig does nothing: only Linux can tie a child's life to its
// parent's. Elsewhere a plugin may outlive a gateway killed with SIGKILL.
func setPdeathsig(*exec.Cmd) {}
