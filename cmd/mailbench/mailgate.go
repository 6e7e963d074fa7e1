package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// defaultChain is line (b): the checks a gateway in front of corporate mail
// would run, all out of process, with their default settings, in one
// process group (process = "checks": one plugin process apart from the
// gateway, a phase's calls to it in one round trip). The DNS server
// mailbench starts answers their lookups; the DNSBL zone it serves is
// empty, and spam runs its built-in rules (no spamd).
const defaultChain = `
[[stage]]
name = "spf"
kind = "spf"
process = "checks"

[[stage]]
name = "dnsbl"
kind = "dnsbl"
process = "checks"
[[stage.config.list]]
zone = "dnsbl.bench.test"

[[stage]]
name = "spam"
kind = "spam"
process = "checks"

[[stage]]
name = "headers"
kind = "headers"
process = "checks"
[stage.config]
authentication_results = true
spam_headers = true
`

// doorServer and doorBlocks are the door-controls line: mailgate with no
// content stages but every control a gateway on port 25 puts before them,
// none of which refuses the bench's mail. The client connects through
// PROXY headers (v1 and v2 by turns) naming an address of its own per
// session in 198.18.0.0/15 (RFC 2544's benchmarking range), not trusted,
// so the pre-greet test, the rate limits and greylisting all apply. The
// pre-greet delay is paid once per client address, in the warm-up; then
// each connection is a cache lookup. The rate limits count per client,
// network, sender and recipient at rates the bench never reaches.
// Greylisting (out of process, as every stage) knows the triplet after the
// warm-up's first tries (delay 1ms) and, with auto_allow off, looks it up
// and renews it for every recipient: its steady state for known senders.
const doorServer = `proxy_protocol = true
proxy_trusted = ["127.0.0.1"]
pregreet_delay = "1s"
`

const doorBlocks = `
[[ratelimit]]
name = "client"
key = "client_ip"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "network"
key = "client_net"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "sender"
key = "sender"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "recipient"
key = "recipient"
rate = 1000000
per = "1s"

[[stage]]
name = "greylist"
kind = "greylist"
[stage.config]
delay = "1ms"
auto_allow = 0
skip_spf_pass = false
`

// milterChain is line (c): opendkim signing through the milter kind.
const milterChain = `
[[stage]]
name = "dkim-sign"
kind = "milter"
[stage.config]
address = "inet:%s"
`

// mailgateConfig writes a mailgate config under dir that relays the test
// domain to the sink, with the given extra [server] keys and [[stage]] (or
// other top-level) blocks, and returns its path.
func mailgateConfig(dir, listen, sinkAddr, dnsAddr, serverKeys, blocks string) (string, error) {
	cfg := fmt.Sprintf(`hostname = "mailgate-bench.localhost"
data_dir = %q

[server]
listen = [%q]
max_message_size = "200MB"
max_connections = 2000
max_connections_per_ip = 2000
%s
[admin]
listen = ""

[dns]
servers = [%q]

[[route]]
domains = [%q]
servers = [%q]
tls = "none"
%s`, filepath.Join(dir, "data"), listen, serverKeys, dnsAddr, recipientDomain, sinkAddr, blocks)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("mailgate config: %w", err)
	}
	path := filepath.Join(dir, "mailgate.toml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return "", fmt.Errorf("mailgate config: %w", err)
	}
	return path, nil
}

// recipientDomain is the envelope recipient's domain, routed to the sink.
const recipientDomain = "bench.test"

// buildMailgate builds ./cmd/mailgate of the module at root into out.
func buildMailgate(ctx context.Context, root, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "./cmd/mailgate")
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/mailgate: %w\n%s", err, b)
	}
	return nil
}

// checkMailgate runs "mailgate check" on a config. A config it refuses
// gives a note saying why the line is skipped, not an error: the stage
// kinds of the lines with stages may not exist yet in this build.
func checkMailgate(ctx context.Context, bin, config string) (note string) {
	cmd := exec.CommandContext(ctx, bin, "check", "-config", config)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(out.String())
		if strings.Contains(msg, ".kind: unexpected") {
			return "a stage kind is unknown to this mailgate build: " + firstLine(msg)
		}
		return "mailgate check refused the config: " + firstLine(msg)
	}
	return ""
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}

// mailgateInstance is a running "mailgate serve".
type mailgateInstance struct {
	addr   string
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, once exited
	// profile is where its processes write their CPU profiles (-profile),
	// "" if they do not.
	profile string
}

// startMailgate starts "mailgate serve" and waits until it answers on addr.
// Its log goes to log; env is added to mailbench's environment.
func startMailgate(ctx context.Context, bin, config, addr, logPath string, env []string) (*mailgateInstance, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("mailgate log: %w", err)
	}
	defer logf.Close() // the child has its own copy
	cmd := exec.Command(bin, "serve", "-config", config)
	cmd.Env = append(os.Environ(), env...)
	// An *os.File is handed to the child as is: no copying goroutine in
	// mailbench, and mailgate's log writes cost mailgate's CPU, as
	// Postfix's cost Postfix's.
	cmd.Stdout, cmd.Stderr = logf, logf
	// If mailbench dies, mailgate shuts down (and stops its plugins).
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start mailgate: %w", err)
	}
	m := &mailgateInstance{addr: addr, cmd: cmd, exited: make(chan struct{})}
	go func() {
		m.err = cmd.Wait()
		close(m.exited)
	}()
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		select {
		case <-m.exited:
			cancel()
		case <-wctx.Done():
		}
	}()
	if err := waitListening(wctx, addr, 60*time.Second); err != nil {
		m.stop()
		return nil, fmt.Errorf("mailgate on %s: %w (exit: %v); log %s:\n%s", addr, err, m.err, logPath, tail(logPath, 10))
	}
	return m, nil
}

func (m *mailgateInstance) pid() int { return m.cmd.Process.Pid }

// stop shuts mailgate down with SIGTERM, as an admin would, and kills it
// if it has not exited within 30 seconds.
func (m *mailgateInstance) stop() {
	m.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-m.exited:
	case <-time.After(30 * time.Second):
		for _, st := range tree(m.pid()) {
			syscall.Kill(st.pid, syscall.SIGKILL)
		}
		<-m.exited
	}
}

// alive reports an error if mailgate has exited.
func (m *mailgateInstance) alive() error {
	select {
	case <-m.exited:
		return errors.Join(errors.New("mailgate exited"), m.err)
	default:
		return nil
	}
}

// tail is the last n lines of a file.
func tail(path string, n int) string {
	b, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}
