//go:build !linux

package testkit

import "os/exec"

// KillWithParent does nothing where the kernel has no parent-death
// signal; the test's cleanups stop the process.
func KillWithParent(*exec.Cmd) {}
