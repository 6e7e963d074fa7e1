package router

import (
	"context"
	"log/slog"
	"strings"
	"syscall"
	"testing"

	"github.com/mailgate/mailgate/spool"
)

// When Run cannot work at all, Err says why, so that the gateway stops
// taking mail nobody would deliver.
func TestErrWhenRunFails(t *testing.T) {
	sp, err := spool.OpenWith(t.TempDir(), spool.Options{FailReads: func() error { return syscall.EIO }})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	r, err := New(testConfig(), sp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("Err() before Run = %v", err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("Run with a spool that cannot be read returned nil")
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "load queue") {
		t.Fatalf("Err() after a failed Run = %v", err)
	}
}
