package host

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// BenchmarkRoundTrip measures one Run through a real plugin process (the
// test plugin, which reads and hashes the body). Allocations are the
// gateway's side only.
func BenchmarkRoundTrip(b *testing.B) {
	big := make([]byte, 1<<20)
	rand.Read(big)
	path := filepath.Join(b.TempDir(), "body")
	if err := os.WriteFile(path, big, 0o600); err != nil {
		b.Fatal(err)
	}
	p := startTest(b, Spec{})
	for _, bc := range []struct {
		name string
		body stages.Body
	}{
		{"envelope", nil},
		{"small-2KiB", stages.BytesBody(big[:2048])},
		{"1MiB-file", fileBody{path: path, size: int64(len(big))}},
		{"1MiB-streamed", stages.BytesBody(big)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			tx := dataTx("a@example.org", bc.body)
			b.ReportAllocs()
			for b.Loop() {
				if _, err := p.Run(context.Background(), stages.Data, tx); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
