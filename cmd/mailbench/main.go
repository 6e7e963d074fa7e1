// Command mailbench measures mailgate against Postfix on loopback, for
// developers (it is not installed for users; `make bench` runs it, as root).
//
// The same load, from one SMTP client built in here, goes to each line in
// turn: postfix's smtp-sink alone (the ceiling), a Postfix relay, mailgate
// without stages, mailgate with the door controls on (PROXY protocol,
// pre-greet test, rate limits, greylisting), mailgate with the default chain (spf, dnsbl, spam,
// headers, out of process, against a DNS server in mailbench), the same
// with the web console on, idle and with its dashboard polled, and opendkim
// as a milter behind Postfix and behind mailgate, and mailgate as one and as
// three nodes of a cluster sharing Redis and PostgreSQL (cluster.go). Every
// relay delivers to an smtp-sink of its own, whose count must equal the
// 250s the client got.
// Lines take turns in rounds, so drift on a shared machine hits them alike.
// For each line it reports accepted and delivered msg/s, the time from the
// final "." to the reply (p50, p99), CPU seconds per 1,000 messages and
// peak memory of the server's process tree, then the p99 at half the peak
// rate and mailgate's memory with 1,000 idle connections and with one
// 100 MB message. It prints a Markdown report; -write puts it into
// BENCHMARKS.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/mailgate/mailgate/stages"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// options are the command-line flags.
type options struct {
	messages  int
	size      stages.Size
	large     int
	largeSize stages.Size
	sessions  int
	perConn   int
	rounds    int
	warmup    int
	lines     string
	chain     string
	halfPeak  bool
	memory    bool
	idle      int
	bigSize   stages.Size
	write     bool
	out       string
	keep      bool
	mailgate  string
	profile   string
	baseline  string
	// baselineChain replaces the chain of the baseline's chain line: a
	// baseline binary may not know the keys of the chain (process).
	baselineChain string
	args          []string // as given, for the report
}

func parseFlags(args []string, stderr io.Writer) (*options, error) {
	o := &options{size: 5 << 10, largeSize: 100 << 10, bigSize: 100 << 20, args: args}
	fs := flag.NewFlagSet("mailbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.IntVar(&o.messages, "n", 10000, "messages per line in the main run")
	fs.TextVar(&o.size, "size", &o.size, "message `size` of the main run (\"5KiB\", \"5KB\", \"800B\")")
	fs.IntVar(&o.large, "large-n", 0, "messages per line in the large-message run (default n/5; -1: no large run)")
	fs.TextVar(&o.largeSize, "large-size", &o.largeSize, "message `size` of the large-message run")
	fs.IntVar(&o.sessions, "c", 20, "concurrent SMTP sessions")
	fs.IntVar(&o.perConn, "per-conn", 100, "messages per connection")
	fs.IntVar(&o.rounds, "rounds", 4, "rounds the messages are split into; lines take turns in each")
	fs.IntVar(&o.warmup, "warmup", 200, "messages each line gets before it is measured")
	fs.StringVar(&o.lines, "lines", strings.Join(lineNames(), ","), "comma-separated `lines` to run")
	fs.StringVar(&o.chain, "chain", "", "TOML `file` of [[stage]] blocks for the mailgate+chain line (default: spf, dnsbl, spam, headers)")
	fs.BoolVar(&o.halfPeak, "half-peak", true, "measure p99 at half the peak rate")
	fs.BoolVar(&o.memory, "memory", true, "measure mailgate's memory with idle connections and one big message")
	fs.IntVar(&o.idle, "idle", 1000, "idle connections of the memory measurement")
	fs.TextVar(&o.bigSize, "big-size", &o.bigSize, "`size` of the one big message of the memory measurement")
	fs.BoolVar(&o.write, "write", false, "write the report into the -out file")
	fs.StringVar(&o.out, "out", "BENCHMARKS.md", "`file` -write puts the report in, between mailbench markers")
	fs.StringVar(&o.mailgate, "mailgate", "", "use this mailgate `binary` instead of building ./cmd/mailgate")
	fs.StringVar(&o.profile, "profile", "", "write a CPU profile of every mailgate process (gateway and plugins) under `dir`/<line>/ (go tool pprof reads them)")
	fs.StringVar(&o.baseline, "baseline", "", "also run each mailgate line with this mailgate `binary`, as \"<line> (baseline)\", taking turns with the others: a before/after in one run")
	fs.StringVar(&o.baselineChain, "baseline-chain", "", "TOML `file` of [[stage]] blocks for the mailgate+chain line of the -baseline binary (default: as -chain)")
	fs.BoolVar(&o.keep, "keep", false, "keep the temp dir (configs, logs, queues) for a look afterwards")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if o.large == 0 {
		o.large = o.messages / 5
	}
	if o.messages < 1 || o.sessions < 1 || o.perConn < 1 || o.rounds < 1 || o.warmup < 0 {
		return nil, errors.New("-n, -c, -per-conn and -rounds must be positive, -warmup not negative")
	}
	for name := range strings.SplitSeq(o.lines, ",") {
		if !isLine(name) {
			return nil, fmt.Errorf("-lines: unexpected %q; expect some of %s", name, strings.Join(lineNames(), ", "))
		}
	}
	return o, nil
}

func run(args []string, stdout, stderr io.Writer) int {
	o, err := parseFlags(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 2
	}
	if err != nil {
		fmt.Fprintln(stderr, "mailbench:", err)
		return 2
	}
	// An interrupt, a SIGTERM or a SIGHUP (the terminal went away) ends
	// the run; the deferred stops still run (half peak's resume of the
	// lines it paused first), so nothing mailbench started outlives it.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)
	defer stop()
	b := &bench{opts: o, log: stderr}
	rep, err := b.run(ctx)
	if rep != nil {
		md := rep.markdown()
		fmt.Fprint(stdout, md)
		// A run that failed to finish is shown but never replaces the
		// figures of a complete one.
		if o.write && err == nil {
			if werr := writeReport(o.out, md); werr != nil {
				fmt.Fprintln(stderr, "mailbench:", werr)
				return 1
			}
			fmt.Fprintf(stderr, "mailbench: wrote %s\n", o.out)
		}
	}
	if err != nil {
		fmt.Fprintln(stderr, "mailbench:", err)
		return 1
	}
	if rep.failed() {
		fmt.Fprintln(stderr, "mailbench: FAILED: see the notes of the report")
		return 1
	}
	return 0
}

// tools are the paths of the programs mailbench runs.
type tools struct {
	postfix, smtpSink, opendkim, opendkimGenkey string
}

// findTools looks the programs up on PATH and in the sbin directories,
// where Debian puts them.
func findTools() (tools, error) {
	look := func(name string) (string, error) {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
		for _, dir := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
			p := filepath.Join(dir, name)
			if fi, err := os.Stat(p); err == nil && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		return "", fmt.Errorf("%s not found", name)
	}
	var t tools
	var errs []error
	for _, x := range []struct {
		dst       *string
		name, pkg string
	}{
		{&t.postfix, "postfix", "postfix"},
		{&t.smtpSink, "smtp-sink", "postfix"},
		{&t.opendkim, "opendkim", "opendkim"},
		{&t.opendkimGenkey, "opendkim-genkey", "opendkim-tools"},
	} {
		p, err := look(x.name)
		if err != nil {
			errs = append(errs, fmt.Errorf("%w: install the Debian package %s (make deps does, as root)", err, x.pkg))
		}
		*x.dst = p
	}
	return t, errors.Join(errs...)
}

// moduleRoot is the directory of the go.mod above the working directory.
func moduleRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod above the working directory: run mailbench in the mailgate repository")
		}
		dir = parent
	}
}

// freeAddr returns a loopback address with a port free at the time of the
// call, for servers that cannot be handed a listener.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// waitListening waits until something accepts connections on addr.
func waitListening(ctx context.Context, addr string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("nothing listens: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}
