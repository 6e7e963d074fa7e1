package main

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strings"
)

// profileEnv names a directory in which every mailgate process (serve and
// each plugin it starts, which inherit the environment) writes a CPU
// profile of its whole life, for developers: cmd/mailbench's -profile sets
// it, and `go tool pprof` reads the files. Unset, nothing is profiled.
const profileEnv = "MAILGATE_CPUPROFILE"

// startProfile starts the CPU profile of this process when profileEnv is
// set and returns what stops it and writes the file. The file is named
// after the command (serve, plugin-spam, …) and the process ID.
func startProfile(args []string) (stop func(), err error) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}, nil
	}
	role := args[0]
	if role == "plugin" && len(args) > 1 {
		role += "-" + strings.Join(args[1:], "+") // a process group: its kinds
	}
	path := filepath.Join(dir, fmt.Sprintf("%s-%d.pprof", role, os.Getpid()))
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", profileEnv, err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
