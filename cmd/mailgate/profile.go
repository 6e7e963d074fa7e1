package main

import (
	"bytes"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
)

// profileEnv names a directory in which every mailgate process (serve and
// each plugin it starts, which inherit the environment) writes CPU
// profiles, for developers: cmd/mailbench's -profile sets it, and `go
// tool pprof` reads the files. Unset, nothing is profiled.
//
// A process profiles its whole life in segments: SIGUSR1 ends the
// segment under way and starts the next, named by the word in the file
// profileSegmentFile of that directory ("start" before the first
// signal). Segment n of a process is the file
// <segment>/<role>-<pid>-<n>.pprof, written when it ends (the last one
// as the process exits). mailbench cuts at the start and end of every
// batch of mail, so a profile covers one kind of load and nothing else.
const (
	profileEnv         = "MAILGATE_CPUPROFILE"
	profileSegmentFile = "segment"
)

// startProfile starts the CPU profile of this process when profileEnv is
// set and returns what stops it and writes the last segment. The files
// are named after the command (serve, plugin-spam, …) and the process ID.
func startProfile(args []string) (stop func(), err error) {
	dir := os.Getenv(profileEnv)
	if dir == "" {
		return func() {}, nil
	}
	role := args[0]
	if role == "plugin" && len(args) > 1 {
		role += "-" + strings.Join(args[1:], "+") // a process group: its kinds
	}
	p := &profiler{dir: dir, name: fmt.Sprintf("%s-%d", role, os.Getpid())}
	if err := p.begin("start"); err != nil {
		return nil, err
	}
	cut := make(chan os.Signal, 1)
	signal.Notify(cut, syscall.SIGUSR1)
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-cut:
				if err := p.next(); err != nil {
					fmt.Fprintln(os.Stderr, "mailgate:", err)
				}
			case <-done:
				return
			}
		}
	})
	return func() {
		signal.Stop(cut)
		close(done)
		wg.Wait()
		p.end()
	}, nil
}

// profiler is the CPU profile of one process, in segments.
type profiler struct {
	dir, name string
	n         int      // segments begun
	f         *os.File // the segment under way
}

func (p *profiler) begin(segment string) error {
	sub := filepath.Join(p.dir, segment)
	if err := os.MkdirAll(sub, 0o755); err != nil {
		return fmt.Errorf("%s: %w", profileEnv, err)
	}
	p.n++
	f, err := os.Create(filepath.Join(sub, fmt.Sprintf("%s-%d.pprof", p.name, p.n)))
	if err != nil {
		return fmt.Errorf("%s: %w", profileEnv, err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return fmt.Errorf("%s: %w", profileEnv, err)
	}
	p.f = f
	return nil
}

func (p *profiler) end() {
	if p.f != nil {
		pprof.StopCPUProfile()
		p.f.Close()
		p.f = nil
	}
}

// next ends the segment under way and begins the one profileSegmentFile
// names.
func (p *profiler) next() error {
	word, err := os.ReadFile(filepath.Join(p.dir, profileSegmentFile))
	if err != nil {
		return fmt.Errorf("%s: %w", profileEnv, err)
	}
	segment := string(bytes.TrimSpace(word))
	if segment == "" || strings.ContainsAny(segment, `/\`) || segment[0] == '.' {
		return fmt.Errorf("%s: segment %q is not a directory name", profileEnv, segment)
	}
	p.end()
	return p.begin(segment)
}
