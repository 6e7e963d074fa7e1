package host

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// BenchmarkRoundTrip measures one Run through a real plugin process (the
// test plugin, which reads and hashes the body), over the data path and
// over gRPC (a plugin built before the data path), one call at a time and
// from 20 goroutines at once (as 20 SMTP sessions). Allocations are the
// gateway's side only; the CPU the plugin process spends is reported as
// plugin-ns/op, that of the gateway's side (this process) as host-ns/op.
func BenchmarkRoundTrip(b *testing.B) {
	big := make([]byte, 1<<20)
	rand.Read(big)
	path := filepath.Join(b.TempDir(), "body")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		b.Fatal(err)
	}
	for _, transport := range []string{"data", "grpc"} {
		b.Run(transport, func(b *testing.B) {
			if transport == "grpc" {
				b.Setenv("TESTPLUGIN_GRPC_ONLY", "1")
			}
			p := startTest(b, Spec{})
			for _, bc := range []struct {
				name     string
				body     stages.Body
				parallel bool
			}{
				{"envelope", nil, false},
				{"envelope-parallel", nil, true},
				{"small-2KiB", stages.BytesBody(big[:2048]), false},
				{"small-2KiB-parallel", stages.BytesBody(big[:2048]), true},
				{"1MiB-file", fileBody{path: path, size: int64(len(big))}, false},
				{"1MiB-streamed", stages.BytesBody(big), false},
			} {
				b.Run(bc.name, func(b *testing.B) {
					tx := dataTx("a@example.org", bc.body)
					pid := p.current().pid
					cpu0, self0 := processCPU(b, pid), selfCPU()
					b.ReportAllocs()
					if bc.parallel {
						b.SetParallelism(10) // 20 goroutines on 2 cores
						b.RunParallel(func(pb *testing.PB) {
							for pb.Next() {
								if _, err := p.Run(context.Background(), stages.Data, tx); err != nil {
									b.Error(err)
									return
								}
							}
						})
					} else {
						for b.Loop() {
							if _, err := p.Run(context.Background(), stages.Data, tx); err != nil {
								b.Fatal(err)
							}
						}
					}
					b.ReportMetric(float64(processCPU(b, pid)-cpu0)/float64(b.N), "plugin-ns/op")
					b.ReportMetric(float64(selfCPU()-self0)/float64(b.N), "host-ns/op")
				})
			}
		})
	}
}

// processCPU is the CPU time (user and system) process pid has used.
func processCPU(b *testing.B, pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		b.Fatal(err)
	}
	// The fields after the command name, which is in parentheses.
	f := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+2:]))
	utime, _ := strconv.ParseInt(f[11], 10, 64)
	stime, _ := strconv.ParseInt(f[12], 10, 64)
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// selfCPU is the CPU time this process has used.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
