package router

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/router/routertest"
	"github.com/mailgate/mailgate/policy"
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

// A route whose server takes the connection but never greets costs one
// probe's deadline, not one per recipient: the route is not asked again
// for a while, and mail is taken meanwhile.
func TestVerifyHungServer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var accepted atomic.Int32
	var conns []net.Conn
	var mu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			mu.Lock()
			conns = append(conns, c) // held open, never greeted
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	route := policy.Route{Domains: []string{"ex.test"}, Servers: []string{ln.Addr().String()}, VerifyRcpts: true}
	cfg := testConfig(route)
	r, err := New(cfg, openSpool(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := &cfg.Routes[0]
	for i := range 5 {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		start := time.Now()
		err := r.VerifyRcpt(ctx, rt, fmt.Sprintf("u%d@ex.test", i))
		cancel()
		if err != nil {
			t.Fatalf("hung server: %v, want the mail taken", err)
		}
		if el := time.Since(start); i > 0 && el > 100*time.Millisecond {
			t.Fatalf("recipient %d waited %v: the hung route was probed again", i, el)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d probe connections to a hung server, want 1", n)
	}
}
