package router

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// rcptCommands counts the RCPT commands the server got for addr.
func rcptCommands(srv *smtptest.Server, addr string) int {
	n := 0
	for _, w := range srv.Transcripts() {
		n += strings.Count(w, "RCPT TO:<"+addr+">")
	}
	return n
}

func TestVerifyRcpt(t *testing.T) {
	srv := smtptest.NewServer(t)
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
	// A temporary refusal leaves the recipient unverified (the client
	// tries later; taken, it might bounce to a forged sender), and it is
	// asked again next time.
	for range 2 {
		if err := r.VerifyRcpt(ctx, rt, "busy@ex.test"); !errors.Is(err, ErrUnverified) || isPermanent(err) {
			t.Errorf("recipient with a 450: %v, want it unverified", err)
		}
	}
	if n := rcptCommands(srv, "busy@ex.test"); n != 2 {
		t.Errorf("busy@ex.test asked %d times, want 2", n)
	}
	// Unless the route fails open.
	open := *rt
	open.VerifyRcptsUnverified = "accept"
	if err := r.VerifyRcpt(ctx, &open, "busy@ex.test"); err != nil {
		t.Errorf("recipient with a 450, failing open: %v, want nil", err)
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
	// No server answering: unknown recipients are unverified, now and
	// while the route is not asked again; known ones are still known.
	srv.Stop()
	for _, addr := range []string{"carol@ex.test", "dave@ex.test"} {
		if err := r.VerifyRcpt(ctx, rt, addr); !errors.Is(err, ErrUnverified) {
			t.Errorf("%s, servers down: %v, want it unverified", addr, err)
		}
	}
	if err := r.VerifyRcpt(ctx, rt, "bob@ex.test"); err != nil {
		t.Errorf("known recipient, servers down: %v", err)
	}
	if err := r.VerifyRcpt(ctx, &open, "dave@ex.test"); err != nil {
		t.Errorf("servers down, failing open: %v, want nil", err)
	}
}

// A probe cancelled because the client left says nothing about the
// route: it is asked again for the next recipient.
func TestVerifyCancelledNotDown(t *testing.T) {
	srv := smtptest.NewServer(t)
	route := serverRoute("ex.test", srv)
	route.VerifyRcpts = true
	cfg := testConfig(route)
	r, err := New(cfg, openSpool(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := &cfg.Routes[0]
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	if err := r.VerifyRcpt(gone, rt, "a@ex.test"); !errors.Is(err, ErrUnverified) {
		t.Fatalf("cancelled probe: %v, want it unverified", err)
	}
	if err := r.VerifyRcpt(context.Background(), rt, "b@ex.test"); err != nil {
		t.Fatalf("after a cancelled probe: %v, want b@ex.test asked and known", err)
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

// A next hop without SMTPUTF8 refuses a non-ASCII recipient for good, as
// delivery would; it answered, so it is asked about the next recipient.
func TestVerifyNoSMTPUTF8(t *testing.T) {
	srv := smtptest.NewServer(t, smtptest.WithoutSMTPUTF8())
	route := serverRoute("ex.test", srv)
	route.VerifyRcpts = true
	cfg := testConfig(route)
	r, err := New(cfg, openSpool(t), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	rt := &cfg.Routes[0]
	if err := r.VerifyRcpt(context.Background(), rt, "\u00fc@ex.test"); !isPermanent(err) {
		t.Fatalf("non-ASCII recipient, no SMTPUTF8: %v, want a permanent refusal", err)
	}
	if err := r.VerifyRcpt(context.Background(), rt, "bob@ex.test"); err != nil {
		t.Fatalf("next recipient: %v, want it asked and known", err)
	}
}

// A route whose server takes the connection but never greets costs one
// probe's deadline, not one per recipient: the route is not asked again
// for a while, and its recipients are unverified meanwhile (450 4.1.1 at
// RCPT), never taken on trust.
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
		err := r.VerifyRcpt(ctx, rt, fmt.Sprintf("u%d@ex.test", i))
		cancel()
		if !errors.Is(err, ErrUnverified) {
			t.Fatalf("hung server, recipient %d: %v, want it unverified", i, err)
		}
	}
	if n := accepted.Load(); n != 1 {
		t.Fatalf("%d probe connections to a hung server, want 1", n)
	}
}
