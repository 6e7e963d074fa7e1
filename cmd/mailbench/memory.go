package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"sync"
	"time"
)

// Memory targets of mailgate (the issue "Measured speed against Postfix").
const (
	idleTarget = 150 << 20 // RSS of the mailgate process with 1,000 idle connections
	bigTarget  = 32 << 20  // RSS growth while relaying one 100 MB message
)

// memResult is the memory measurement of one mailgate config, on a fresh
// instance so that earlier load does not hide growth.
type memResult struct {
	line string
	err  string

	baseRSS       int64         // process RSS before the big message
	bigPeak       int64         // process RSS peak while the big message went through
	bigTreePeak   int64         // the same for the process tree (plugins included)
	baseTree      int64         // tree RSS before
	bigAccepted   bool          // the big message got a 250 and reached the sink
	bigLatency    time.Duration // from its final "." to the 250
	idleConns     int           // idle connections open at the measurement
	idleRSS       int64         // process RSS with them open
	idleTreeRSS   int64
	idleBeforeRSS int64
}

// rssOf is the resident set of one process, in bytes.
func rssOf(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	st, err := parseStat(b)
	if err != nil {
		return 0
	}
	return st.rss * int64(os.Getpagesize())
}

// measureMemory runs the memory measurements on the mailgate lines that
// run.
func (b *bench) measureMemory(ctx context.Context, rep *report) error {
	for _, l := range b.running() {
		if l.name != lineMailgate && l.name != lineChain {
			continue
		}
		b.logf("%s: memory (one %d-byte message, %d idle connections)", l.name, b.opts.bigSize, b.opts.idle)
		r := memResult{line: l.name}
		if err := b.memory(ctx, l, &r); err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			r.err = err.Error()
			rep.fail("%s memory: %v", l.name, err)
		}
		rep.memory = append(rep.memory, r)
	}
	return nil
}

func (b *bench) memory(ctx context.Context, l *line, r *memResult) error {
	stageBlocks := ""
	if l.name == lineChain {
		var err error
		if stageBlocks, err = b.chainBlocks(l); err != nil {
			return err
		}
	}
	m, note, err := b.startMailgate(ctx, l.bin, l.name+"-memory", l.sink.addr, "", stageBlocks)
	if err != nil {
		return err
	}
	if note != "" {
		return fmt.Errorf("%s", note)
	}
	defer m.stop()
	pid := m.pid()
	time.Sleep(time.Second) // plugins finish starting
	r.baseRSS, r.baseTree = rssOf(pid), treeRSS(pid)

	// One big message, the process RSS sampled often: its peak may last
	// only as long as a buffer does.
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		t := time.NewTicker(10 * time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			r.bigPeak = max(r.bigPeak, rssOf(pid))
			if i%10 == 0 {
				r.bigTreePeak = max(r.bigTreePeak, treeRSS(pid))
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	})
	before, _ := l.sink.received()
	ld := load{addr: m.addr, messages: 1, size: int(b.opts.bigSize), sessions: 1, perConn: 1,
		from: "bench@" + senderDomain, to: "user@" + recipientDomain}
	res, err := ld.run(ctx)
	if err == nil && res.accepted == 1 {
		got, _ := l.sink.waitFor(ctx, before+1, drainStall)
		r.bigAccepted = got == before+1
		r.bigLatency = res.latency[0]
	}
	close(stop)
	wg.Wait()
	if err != nil {
		return fmt.Errorf("big message: %w", err)
	}
	if !r.bigAccepted {
		return fmt.Errorf("big message not relayed: %s", (&batch{res: res}).refusedText())
	}

	// Idle connections: greeted and past EHLO, then left alone, as a
	// slow or idle client leaves them.
	time.Sleep(time.Second)
	r.idleBeforeRSS = rssOf(pid)
	conns, err := openIdle(ctx, m.addr, b.opts.idle)
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	r.idleConns = len(conns)
	if err != nil {
		return fmt.Errorf("idle connections: %d open: %w", len(conns), err)
	}
	time.Sleep(2 * time.Second)
	r.idleRSS, r.idleTreeRSS = rssOf(pid), treeRSS(pid)
	return m.alive()
}

// treeRSS is the RSS of a process tree, in bytes.
func treeRSS(pid int) int64 {
	var rss int64
	for _, st := range tree(pid) {
		rss += st.rss
	}
	return rss * int64(os.Getpagesize())
}

// openIdle opens n connections, each greeted and past EHLO.
func openIdle(ctx context.Context, addr string, n int) ([]net.Conn, error) {
	var conns []net.Conn
	var d net.Dialer
	for range n {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			return conns, err
		}
		conns = append(conns, c)
		cl := &client{conn: c, r: bufio.NewReader(c), w: bufio.NewWriter(c)}
		if code, _, err := cl.reply(); err != nil || code != 220 {
			return conns, greetingError(code, err)
		}
		cl.w.WriteString("EHLO idle.localhost\r\n")
		if code, _, err := cl.flushReply(); err != nil || code != 250 {
			return conns, fmt.Errorf("EHLO: %d %v", code, err)
		}
	}
	return conns, nil
}
