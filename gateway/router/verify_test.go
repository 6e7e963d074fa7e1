package router

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/router/routertest"
)

// rcptCommands counts the RCPT commands the server got for addr.
func rcptCommands(srv *routertest.Server, addr string) int {
	n := 0
	for _, w := range srv.Transcripts() {
		n += strings.Count(w, "RCPT TO:<"+addr+">")
	}
	return n
}

func TestVerifyRcpt(t *testing.T) {
	srv := routertest.NewServer(t)
	srv.SetRcptReply("nobody@ex.test", 550)
	srv.SetRcptReply("busy@ex.test", 450)
	route := serverRoute("ex.test", srv)
	route.VerifyRcpts = true
	cfg := testConfig(route)
	r, err := New(cfg, openSpool(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := &cfg.Routes[0]
	ctx := context.Background()
	for range 2 { // the second round comes from the cache
		if err := r.VerifyRcpt(ctx, rt, "bob@ex.test"); err != nil {
			t.Errorf("known recipient: %v", err)
		}
		if err := r.VerifyRcpt(ctx, rt, "nobody@ex.test"); err == nil || !strings.HasPrefix(replyOf(err), "550 5.1.1") {
			t.Errorf("unknown recipient: %v, want the server's 550 5.1.1", err)
		}
	}
	for _, addr := range []string{"bob@ex.test", "nobody@ex.test"} {
		if n := rcptCommands(srv, addr); n != 1 {
			t.Errorf("%s asked %d times, want once", addr, n)
		}
	}
	// A temporary refusal takes the mail (it will queue) and is asked
	// again next time.
	for range 2 {
		if err := r.VerifyRcpt(ctx, rt, "busy@ex.test"); err != nil {
			t.Errorf("recipient with a 450: %v, want nil", err)
		}
	}
	if n := rcptCommands(srv, "busy@ex.test"); n != 2 {
		t.Errorf("busy@ex.test asked %d times, want 2", n)
	}
	// One pooled connection did it all, and nothing was delivered.
	if n := srv.Connections(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
	if n := len(srv.Messages()); n != 0 {
		t.Errorf("%d messages delivered by probes", n)
	}
	wire := srv.Transcripts()[0]
	if !strings.Contains(wire, "MAIL FROM:<>") || strings.Contains(wire, "DATA") {
		t.Errorf("probe transcript:\n%s", wire)
	}
	// No server answering: the mail is taken, to be queued.
	srv.Stop()
	if err := r.VerifyRcpt(ctx, rt, "carol@ex.test"); err != nil {
		t.Errorf("servers down: %v, want nil", err)
	}
}

func TestVerifyCacheBounded(t *testing.T) {
	var vc verifyCache
	now := time.Now()
	for i := range verifyCacheSize + 10 {
		vc.put(fmt.Sprint(i), verdict{expires: now.Add(time.Hour)}, now)
	}
	if n := len(vc.entries); n > verifyCacheSize {
		t.Fatalf("%d entries, want at most %d", n, verifyCacheSize)
	}
	if _, ok := vc.get(fmt.Sprint(verifyCacheSize+9), now); !ok {
		t.Error("the newest entry is gone")
	}
	if _, ok := vc.get(fmt.Sprint(verifyCacheSize+9), now.Add(2*time.Hour)); ok {
		t.Error("an expired entry is still served")
	}
}
