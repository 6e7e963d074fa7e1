package pipeline

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// benchChain is mailbench's default chain (line mailgate+chain): the
// checks a gateway in front of corporate mail runs, with their DNS
// answered on loopback (SPF passes the sender, the DNSBL zone is empty).
var benchChain = []struct{ name, kind, config string }{
	{"spf", "spf", `{}`},
	{"dnsbl", "dnsbl", `{"list": [{"zone": "dnsbl.bench.test"}]}`},
	{"spam", "spam", `{}`},
	{"headers", "headers", `{"authentication_results": true, "spam_headers": true}`},
}

// BenchmarkDefaultChain runs the phases of a 5 KiB message (MAIL, RCPT,
// DATA; CONNECT once per 100 messages, a session of mailbench's) through
// mailbench's default chain, each stage a real plugin process of the
// mailgate binary ("apart") or the four in one process group ("group"),
// from 20 goroutines (SMTP sessions) at once: what the chain costs per
// message apart from SMTP and the spool. It reports the CPU of the plugin
// processes (plugins-ns/op) and of this process, the gateway's side
// (host-ns/op); their sum is the chain's cost.
func BenchmarkDefaultChain(b *testing.B) {
	bin := buildMailgate(b)
	dns := dnstest.NewServer(b, dnstest.Zone{"sender.test": {`TXT "v=spf1 ip4:127.0.0.0/8 -all"`}})
	env := stages.Env{Hostname: "mx.bench.test", DNSServers: []string{dns.Addr()}, DNSTimeout: 2 * time.Second, DataDir: b.TempDir()}
	discard := slog.New(slog.DiscardHandler)
	b.Run("apart", func(b *testing.B) {
		var specs []StageSpec
		var pids []int
		for _, s := range benchChain {
			p, err := host.Start(context.Background(), host.Spec{Name: s.name, Cmd: []string{bin, "plugin", s.kind}, Config: []byte(s.config), Env: env, Logger: discard})
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { p.Close() })
			pids = append(pids, p.State().PID)
			specs = append(specs, StageSpec{Stage: p})
		}
		benchChainMessages(b, specs, pids)
	})
	b.Run("group", func(b *testing.B) {
		cmd := []string{bin, "plugin"}
		var members []host.Member
		for _, s := range benchChain {
			cmd = append(cmd, s.kind)
			members = append(members, host.Member{Name: s.name, Kind: s.kind, Config: []byte(s.config)})
		}
		ps, err := host.StartGroup(context.Background(), host.Spec{Name: "checks", Cmd: cmd, Env: env, Logger: discard}, members)
		if err != nil {
			b.Fatal(err)
		}
		var specs []StageSpec
		for _, p := range ps {
			b.Cleanup(func() { p.Close() })
			specs = append(specs, StageSpec{Stage: p})
		}
		benchChainMessages(b, specs, []int{ps[0].State().PID})
	})
}

// benchChainMessages is BenchmarkDefaultChain on the stages of specs,
// served by the processes pids.
func benchChainMessages(b *testing.B, specs []StageSpec, pids []int) {
	pl, err := New(specs, policy.Policy{TagScore: 5, QuarantineScore: 10, RejectScore: 15}, Options{})
	if err != nil {
		b.Fatal(err)
	}
	msg := benchMessage(5 << 10)
	path := filepath.Join(b.TempDir(), "message")
	if err := os.WriteFile(path, msg, 0o600); err != nil {
		b.Fatal(err)
	}
	header, err := stages.ParseHeader(bufio.NewReader(bytes.NewReader(msg)))
	if err != nil {
		b.Fatal(err)
	}
	offset := int64(bytes.Index(msg, []byte("\r\n\r\n")) + 4)
	body := &benchBody{path: path, offset: offset, size: int64(len(msg)) - offset}

	cpu0, self0 := plugins(b, pids), selfCPU()
	b.SetParallelism(10) // 20 goroutines on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		ctx := context.Background()
		client := stages.Client{Addr: netip.MustParseAddr("127.0.0.1"), Port: 40000, Name: "client.sender.test", Helo: "client.sender.test"}
		var s *Session
		for n := 0; pb.Next(); n++ {
			if n%100 == 0 {
				s = pl.Begin()
				if d := s.Run(ctx, stages.Connect, &stages.Transaction{Client: client}, nil); d.Action != stages.Continue {
					b.Errorf("connect: %s %s", d.Action, d.Reason)
					return
				}
			}
			t := s.Fork()
			tx := &stages.Transaction{QueueID: "Q" + strconv.Itoa(n), Client: client, From: "bench@sender.test"}
			for _, ph := range []stages.Phase{stages.Mail, stages.Rcpt, stages.Data} {
				switch ph {
				case stages.Rcpt:
					tx.Rcpts = []string{"user@bench.test"}
				case stages.Data:
					tx.Header, tx.Body = slicesClone(header), body
				}
				if d := t.Run(ctx, ph, tx, nil); d.Action >= stages.Quarantine {
					b.Errorf("%s: %s %s", ph, d.Action, d.Reason)
					return
				}
			}
		}
	})
	b.ReportMetric(float64(plugins(b, pids)-cpu0)/float64(b.N), "plugins-ns/op")
	b.ReportMetric(float64(selfCPU()-self0)/float64(b.N), "host-ns/op")
}

func slicesClone(h stages.Header) stages.Header { return append(stages.Header(nil), h...) }

// benchBody is a spooled body: the plugins read it from the file.
type benchBody struct {
	path         string
	offset, size int64
}

func (b *benchBody) Size() int64           { return b.size }
func (b *benchBody) File() (string, int64) { return b.path, b.offset }
func (b *benchBody) Open() (io.ReadCloser, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, b.offset, b.size), f}, nil
}

// benchMessage is mailbench's message of about size bytes.
func benchMessage(size int) []byte {
	var b strings.Builder
	b.WriteString("From: Bench Sender <bench@sender.test>\r\nTo: Bench Recipient <user@bench.test>\r\n")
	b.WriteString("Subject: Quarterly figures for the planning meeting\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\n")
	b.WriteString("Message-ID: <1@sender.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n")
	const line = "Please find below the figures we discussed on Tuesday, with the notes\r\n"
	words := []string{"budget", "travel", "review", "schedule", "office", "report", "project", "team"}
	for i := 0; b.Len() < size; i++ {
		if i%8 == 7 {
			fmt.Fprintf(&b, "Item %d: %s %s %d.%02d\r\n", i, words[i%len(words)], words[(i/8)%len(words)], i*37%1000, i%100)
			continue
		}
		b.WriteString(line)
	}
	return []byte(b.String())
}

// builds are the binaries buildBinary built, by package.
var builds struct {
	sync.Mutex
	bins map[string]string
}

// buildMailgate builds the mailgate binary, which serves the built-in
// kinds, once per test binary (without -race: its CPU is measured).
func buildMailgate(t testing.TB) string { return buildBinary(t, "../../cmd/mailgate") }

// buildBinary builds the main package pkg once per test binary, into a
// directory removed when the test binary's TestMain ends (see main_test.go).
func buildBinary(t testing.TB, pkg string) string {
	t.Helper()
	builds.Lock()
	defer builds.Unlock()
	if bin := builds.bins[pkg]; bin != "" {
		return bin
	}
	bin := filepath.Join(binDir, filepath.Base(pkg))
	if out, err := exec.Command("go", "build", "-o", bin, pkg).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", pkg, err, out)
	}
	if builds.bins == nil {
		builds.bins = map[string]string{}
	}
	builds.bins[pkg] = bin
	return bin
}

// plugins is the CPU time the processes pids have used.
func plugins(b *testing.B, pids []int) time.Duration {
	var sum time.Duration
	for _, pid := range pids {
		stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			b.Fatal(err)
		}
		f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
		utime, _ := strconv.ParseInt(f[11], 10, 64)
		stime, _ := strconv.ParseInt(f[12], 10, 64)
		sum += time.Duration(utime+stime) * time.Second / 100 // USER_HZ
	}
	return sum
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
