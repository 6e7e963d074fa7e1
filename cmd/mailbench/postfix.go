package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// postfixInstance is a Postfix of its own under the temp dir: its own
// config directory, queue and data directory, smtpd on a loopback port,
// everything relayed to one smtp-sink. It is started and stopped with
// "postfix -c DIR", so the machine's own Postfix (if any) is not touched.
type postfixInstance struct {
	bin  string // the postfix command
	dir  string // config_directory; queue and data are beside it
	addr string // smtpd's host:port
}

// postfixMasterCF is the master.cf of an instance: smtpd on one loopback
// port and the services a relay needs, none chrooted (the queue is in a
// temp dir) and no local delivery. %s is the smtpd address.
const postfixMasterCF = `%s inet n - n - - smtpd
pickup    unix  n - n 60    1 pickup
cleanup   unix  n - n -     0 cleanup
qmgr      unix  n - n 300   1 qmgr
rewrite   unix  - - n -     - trivial-rewrite
bounce    unix  - - n -     0 bounce
defer     unix  - - n -     0 bounce
trace     unix  - - n -     0 bounce
verify    unix  - - n -     1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n -     - proxymap
smtp      unix  - - n -     - smtp
relay     unix  - - n -     - smtp
showq     unix  n - n -     - showq
error     unix  - - n -     - error
retry     unix  - - n -     - error
discard   unix  - - n -     - discard
anvil     unix  - - n -     1 anvil
scache    unix  - - n -     1 scache
postlog   unix-dgram n - n - 1 postlogd
`

// startPostfix writes an instance's main.cf and master.cf under base/name
// and starts it. milter is "" or a milter address for smtpd_milters.
func startPostfix(ctx context.Context, bin, base, name, sinkAddr, milter string) (*postfixInstance, error) {
	root := filepath.Join(base, name)
	p := &postfixInstance{bin: bin, dir: filepath.Join(root, "etc")}
	queue, data := filepath.Join(root, "queue"), filepath.Join(root, "data")
	for _, d := range []string{p.dir, queue, data} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("postfix %s: %w", name, err)
		}
	}
	// The master opens data_directory/master.lock as mail_owner.
	owner, err := user.Lookup("postfix")
	if err != nil {
		return nil, fmt.Errorf("postfix %s: %w (is the postfix package installed?)", name, err)
	}
	uid, _ := strconv.Atoi(owner.Uid)
	if err := os.Chown(data, uid, -1); err != nil {
		return nil, fmt.Errorf("postfix %s: %w", name, err)
	}
	p.addr, err = freeAddr()
	if err != nil {
		return nil, err
	}
	sinkHost, sinkPort, _ := strings.Cut(sinkAddr, ":")
	mainCF := strings.Join([]string{
		"compatibility_level = 3.6",
		"queue_directory = " + queue,
		"data_directory = " + data,
		"mail_owner = postfix",
		"setgid_group = postdrop",
		"myhostname = " + strings.ReplaceAll(name, "+", "-") + ".localhost",
		"inet_interfaces = loopback-only",
		"inet_protocols = ipv4",
		"mynetworks = 127.0.0.0/8",
		// No local delivery: everything is relayed to the sink.
		"mydestination =",
		"local_transport = error:local delivery is disabled",
		"alias_maps =",
		"alias_database =",
		"local_recipient_maps =",
		fmt.Sprintf("relayhost = [%s]:%s", sinkHost, sinkPort),
		"smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination",
		"smtp_tls_security_level = none",
		"smtpd_tls_security_level = none",
		"message_size_limit = 209715200",
		// Logging to a file through postlogd: there is no syslog here, and
		// mailgate logs to a file too.
		"maillog_file = " + filepath.Join(root, "maillog"),
		"maillog_file_prefixes = " + root,
		"smtpd_milters = " + milter,
		"non_smtpd_milters =",
		"milter_protocol = 6",
		"milter_default_action = tempfail",
	}, "\n") + "\n"
	if err := os.WriteFile(filepath.Join(p.dir, "main.cf"), []byte(mainCF), 0o644); err != nil {
		return nil, fmt.Errorf("postfix %s: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join(p.dir, "master.cf"), fmt.Appendf(nil, postfixMasterCF, p.addr), 0o644); err != nil {
		return nil, fmt.Errorf("postfix %s: %w", name, err)
	}
	if out, err := p.command(ctx, "start"); err != nil {
		// Postfix writes errors found before its log is open only to a
		// terminal.
		return p, fmt.Errorf("postfix -c %s start: %w\n%s%s\n(for errors not logged, run that command on a terminal)", p.dir, err, out, p.logTail())
	}
	if err := waitListening(ctx, p.addr, 20*time.Second); err != nil {
		return p, fmt.Errorf("postfix %s smtpd on %s: %w\n%s", name, p.addr, err, p.logTail())
	}
	return p, nil
}

func (p *postfixInstance) command(ctx context.Context, verb string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, p.bin, "-c", p.dir, verb)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// logTail is the end of the instance's mail log: Postfix writes its fatal
// errors there, not to a stderr that is not a terminal.
func (p *postfixInstance) logTail() string {
	return tail(filepath.Join(filepath.Dir(p.dir), "maillog"), 10)
}

// master is the PID of the instance's master process, 0 if none.
func (p *postfixInstance) master() int {
	b, err := os.ReadFile(filepath.Join(filepath.Dir(p.dir), "queue", "pid", "master.pid"))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if pid <= 0 || syscall.Kill(pid, 0) != nil {
		return 0
	}
	return pid
}

// stop stops the instance with "postfix -c DIR stop" and makes sure its
// processes are gone: whatever remains after ten seconds is killed.
func (p *postfixInstance) stop() {
	master := p.master()
	if master == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := p.command(ctx, "stop"); err != nil {
		fmt.Fprintf(os.Stderr, "mailbench: postfix -c %s stop: %v %s\n", p.dir, err, out)
	}
	for range 100 {
		if syscall.Kill(master, 0) != nil {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, st := range tree(master) {
		syscall.Kill(st.pid, syscall.SIGKILL)
	}
}
