package main

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"time"
)

// sink is a running postfix smtp-sink that throws mail away and counts it.
// Its -c option prints running counters ("sess=3 quit=3 mesg=42") each time
// a "." is received, separated by CR; the last mesg= is the count.
type sink struct {
	addr string
	cmd  *exec.Cmd
	done chan struct{} // closed when the counter stream ends

	mu    sync.Mutex
	count int
	last  time.Time // when count last grew
}

// startSink starts smtp-sink on a free loopback port.
func startSink(ctx context.Context, bin string) (*sink, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	args := []string{"-c", addr, "1024"}
	if os.Geteuid() == 0 {
		// smtp-sink refuses to run as root without a user to switch to.
		args = append([]string{"-u", "nobody"}, args...)
	}
	cmd := exec.Command(bin, args...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("smtp-sink: %w", err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start smtp-sink: %w", err)
	}
	s := &sink{addr: addr, cmd: cmd, done: make(chan struct{})}
	go s.read(out)
	if err := waitListening(ctx, addr, 5*time.Second); err != nil {
		s.stop()
		return nil, fmt.Errorf("smtp-sink on %s: %w (%s)", addr, err, bytes.TrimSpace(stderr.Bytes()))
	}
	return s, nil
}

var mesgCounter = regexp.MustCompile(`mesg=(\d+)`)

func (s *sink) read(out io.Reader) {
	defer close(s.done)
	sc := bufio.NewScanner(out)
	sc.Split(splitCRLF)
	for sc.Scan() {
		m := mesgCounter.FindSubmatch(sc.Bytes())
		if m == nil {
			continue
		}
		n, _ := strconv.Atoi(string(m[1]))
		s.mu.Lock()
		if n != s.count {
			s.count, s.last = n, time.Now()
		}
		s.mu.Unlock()
	}
}

// splitCRLF is bufio.ScanLines for lines ended by CR or LF.
func splitCRLF(data []byte, atEOF bool) (int, []byte, error) {
	if i := bytes.IndexAny(data, "\r\n"); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

// received returns how many messages the sink has received and when the
// last one arrived.
func (s *sink) received() (int, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count, s.last
}

// waitFor waits until the sink has received want messages in all, the
// count stops growing for stall, or ctx ends. It returns the count.
func (s *sink) waitFor(ctx context.Context, want int, stall time.Duration) (int, time.Time) {
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	seen, since := -1, time.Now()
	for {
		n, last := s.received()
		if n >= want {
			// A few more ticks: a count above want means a duplicate
			// delivery, which must show.
			time.Sleep(100 * time.Millisecond)
			return s.received()
		}
		if n != seen {
			seen, since = n, time.Now()
		}
		if time.Since(since) > stall {
			return n, last
		}
		select {
		case <-ctx.Done():
			return n, last
		case <-t.C:
		}
	}
}

func (s *sink) pid() int { return s.cmd.Process.Pid }

func (s *sink) stop() {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		s.cmd.Process.Kill()
	}
	s.cmd.Wait()
}
