//go:build !linux

package milter

import "os/exec"

// setPdeathsig does nothing where the kernel has no parent-death signal;
// the test's cleanups stop the milters it started.
func setPdeathsig(*exec.Cmd) {}
