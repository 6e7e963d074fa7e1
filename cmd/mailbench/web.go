package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// The console lines: line (b), the default chain, with the web console
// on ([web] listen) and nobody looking (lineWeb), and with one client
// polling the dashboard every second as a browser left open on it would
// (lineWebPolled: the dashboard reads the day's traces at each load).
// Set against lineChain in the same run (webTable), they show what the
// console costs mail.

// webUser and webPassword are the account the poller logs in with.
const webUser, webPassword = "bench", "bench password"

// startWebLine starts a console line: the chain line's config with a
// [web] table, and for lineWebPolled the poller.
func (b *bench) startWebLine(ctx context.Context, l *line) error {
	blocks, err := b.chainBlocks(l)
	if err != nil {
		return err
	}
	web, err := freeAddr()
	if err != nil {
		return err
	}
	hash, err := bcrypt.GenerateFromPassword([]byte(webPassword), bcrypt.MinCost)
	if err != nil {
		return err
	}
	blocks += fmt.Sprintf("\n[web]\nlisten = %q\n\n[[web.user]]\nname = %q\npassword_hash = %q\n", web, webUser, hash)
	m, note, err := b.startMailgate(ctx, l.bin, l.name, l.sink.addr, "", blocks)
	if err != nil || note != "" {
		l.skip = note
		return err
	}
	l.addr, l.alive, l.profiles = m.addr, m.alive, []string{m.profile}
	l.roots = func() []int { return []int{m.pid()} }
	if l.kind == lineWebPolled {
		l.poll = startPoller("http://"+web, time.Second)
		b.onStop(l.poll.stop)
	}
	return nil
}

// poller loads the console's dashboard every interval, logged in, until
// stopped, and counts the loads.
type poller struct {
	ok, failed atomic.Int64
	// on is set while its line takes mail (bench.batch): loading the
	// dashboard between, while other lines are measured, would load the
	// machine under them.
	on     atomic.Bool
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

func startPoller(base string, every time.Duration) *poller {
	ctx, cancel := context.WithCancel(context.Background())
	p := &poller{cancel: cancel}
	jar, _ := cookiejar.New(nil)
	c := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	load := func() error {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/dashboard", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		switch {
		case resp.Request.URL.Path == "/login":
			// Not logged in yet, or the session ended: log in (the
			// redirect brings the dashboard).
			form := url.Values{"name": {webUser}, "password": {webPassword}, "next": {"/dashboard"}}
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, base+"/login", strings.NewReader(form.Encode()))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			if resp, err = c.Do(req); err != nil {
				return err
			}
			defer resp.Body.Close()
			body, _ = io.ReadAll(resp.Body)
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `class="cards"`) {
			return fmt.Errorf("dashboard: %s", resp.Status)
		}
		return nil
	}
	p.wg.Go(func() {
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if !p.on.Load() {
				continue
			}
			if err := load(); err != nil {
				if ctx.Err() == nil {
					p.failed.Add(1)
				}
				continue
			}
			p.ok.Add(1)
		}
	})
	return p
}

func (p *poller) stop() {
	p.cancel()
	p.wg.Wait()
}

// webTable is what the console costs per message: the console lines
// against the chain line in the same run.
func (r *report) webTable(b *strings.Builder) {
	off := r.line(lineChain)
	if off == nil {
		return
	}
	var rows []string
	for _, run := range r.runs {
		so := off.stats[run.label]
		if so == nil || so.accepted == 0 {
			continue
		}
		for _, name := range []string{lineWeb, lineWebPolled} {
			on := r.line(name)
			if on == nil || on.stats[run.label] == nil || on.stats[run.label].accepted == 0 {
				continue
			}
			sn := on.stats[run.label]
			polls := ""
			if on.poll != nil {
				polls = fmt.Sprintf(" (%d dashboard loads, %d failed)", on.poll.ok.Load(), on.poll.failed.Load())
			}
			rows = append(rows, fmt.Sprintf("| %s | %s%s | %.3f | %.3f | %s | %.0f → %.0f | %s | %s → %s |",
				sizeLabel(run.size), name, polls, so.cpuPer1000(), sn.cpuPer1000(), ratio(sn.cpuPer1000(), so.cpuPer1000()),
				so.deliverRate(), sn.deliverRate(), ratio(sn.deliverRate(), so.deliverRate()),
				ms(percentile(so.latency, 99)), ms(percentile(sn.latency, 99))))
		}
	}
	if len(rows) == 0 {
		return
	}
	b.WriteString("#### The console, per message\n\n")
	fmt.Fprintf(b, "Lines %s (the console on, nobody looking) and %s (one client loading the dashboard every second) against line %s, the same chain without the console.\n\n", lineWeb, lineWebPolled, lineChain)
	b.WriteString("| messages | line | CPU ms per message, console off | on | on / off | delivered msg/s off → on | on / off | p99 ms off → on |\n|---|---|--:|--:|--:|--:|--:|--:|\n")
	b.WriteString(strings.Join(rows, "\n") + "\n\n")
}
