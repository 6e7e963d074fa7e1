package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// opendkimInstance is opendkim in signing mode on a loopback port, the
// milter both the Postfix line and the mailgate line of (c) call.
type opendkimInstance struct {
	addr string // host:port of its milter socket
	cmd  *exec.Cmd
}

// startOpendkim generates a signing key for the sender domain under
// base/opendkim and starts opendkim in the foreground with it.
func startOpendkim(ctx context.Context, t tools, base string) (*opendkimInstance, error) {
	dir := filepath.Join(base, "opendkim")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("opendkim: %w", err)
	}
	gen := exec.CommandContext(ctx, t.opendkimGenkey, "-b", "2048", "-D", dir, "-d", senderDomain, "-s", "bench")
	if out, err := gen.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("opendkim-genkey: %w\n%s", err, out)
	}
	key := filepath.Join(dir, "bench.private")
	conf := filepath.Join(dir, "opendkim.conf")
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(addr)
	userLine := ""
	if os.Geteuid() == 0 {
		// opendkim reads the key after dropping privileges, and refuses a
		// key others can read.
		u, err := user.Lookup("opendkim")
		if err != nil {
			return nil, fmt.Errorf("opendkim: %w (is the opendkim package installed?)", err)
		}
		uid, _ := strconv.Atoi(u.Uid)
		if err := os.Chown(key, uid, -1); err != nil {
			return nil, fmt.Errorf("opendkim: %w", err)
		}
		userLine = "UserID opendkim\n"
	}
	cfg := fmt.Sprintf(`Mode s
Domain %s
Selector bench
KeyFile %s
Socket inet:%s@%s
Canonicalization relaxed/simple
Syslog no
PidFile %s
# The key is under the temp dir, whose parents (/tmp) others may write:
# opendkim would refuse it as unsafe.
RequireSafeKeys no
%s`, senderDomain, key, port, host, filepath.Join(dir, "opendkim.pid"), userLine)
	if err := os.WriteFile(conf, []byte(cfg), 0o644); err != nil {
		return nil, fmt.Errorf("opendkim: %w", err)
	}
	cmd := exec.Command(t.opendkim, "-f", "-x", conf)
	var stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stderr, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start opendkim: %w", err)
	}
	o := &opendkimInstance{addr: addr, cmd: cmd}
	if err := waitListening(ctx, addr, 10*time.Second); err != nil {
		o.stop()
		return nil, fmt.Errorf("opendkim on %s: %w\n%s", addr, err, stderr.Bytes())
	}
	return o, nil
}

func (o *opendkimInstance) pid() int { return o.cmd.Process.Pid }

func (o *opendkimInstance) stop() {
	o.cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		o.cmd.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		o.cmd.Process.Kill()
		<-done
	}
}
