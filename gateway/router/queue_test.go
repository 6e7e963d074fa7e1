package router

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/mailgate/mailgate/gateway/router/routertest"
	"github.com/mailgate/mailgate/gateway/spool"
)

// One envelope that cannot be parsed must not stop the delivery of the
// others: it is skipped, logged and counted.
func TestBadEnvelopeSkipped(t *testing.T) {
	srv := routertest.NewServer(t)
	cfg := testConfig(serverRoute("ex.test", srv))
	dir := t.TempDir()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	bad := commit(t, sp, "alice@sender.test", []string{"bob@ex.test"}, sample)
	good := commit(t, sp, "alice@sender.test", []string{"carol@ex.test"}, sample)
	if err := os.WriteFile(filepath.Join(dir, "env", bad.ID), []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}

	h := start(t, cfg, sp)
	msgs := srv.WaitFor(1, waitLong)
	if msgs[0].Rcpts[0] != "carol@ex.test" {
		t.Fatalf("delivered to %q", msgs[0].Rcpts)
	}
	h.waitGone(good.ID)
	if err := h.r.Err(); err != nil {
		t.Errorf("Err() = %v with the router running", err)
	}
	if n := testutil.ToFloat64(h.r.m.bad); n != 1 {
		t.Errorf("bad envelopes counted: %v, want 1", n)
	}
	if !strings.Contains(h.logs.String(), "envelope skipped") || !strings.Contains(h.logs.String(), bad.ID) {
		t.Errorf("no log line about %s:\n%s", bad.ID, h.logs)
	}
	// It stays for an operator to repair or remove.
	if _, err := os.Stat(sp.MessagePath(bad.ID)); err != nil {
		t.Errorf("message of the bad envelope: %v", err)
	}
}

// When Run cannot work at all, Err says why, so that the gateway stops
// taking mail nobody would deliver.
func TestErrWhenRunFails(t *testing.T) {
	dir := t.TempDir()
	sp, err := spool.Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	r, err := New(testConfig(), sp, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(dir, "env")); err != nil {
		t.Fatal(err)
	}
	if err := r.Err(); err != nil {
		t.Fatalf("Err() before Run = %v", err)
	}
	if err := r.Run(context.Background()); err == nil {
		t.Fatal("Run without an env directory returned nil")
	}
	if err := r.Err(); err == nil || !strings.Contains(err.Error(), "load queue") {
		t.Fatalf("Err() after a failed Run = %v", err)
	}
}
