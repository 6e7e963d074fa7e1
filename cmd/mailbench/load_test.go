package main

import (
	"bytes"
	"context"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// recorder is a go-smtp backend that keeps what it receives and refuses
// the end of data of every message whose Subject holds "refuse".
type recorder struct {
	mu       sync.Mutex
	messages [][]byte
	sessions int
}

func (r *recorder) NewSession(*smtp.Conn) (smtp.Session, error) {
	r.mu.Lock()
	r.sessions++
	r.mu.Unlock()
	return &recordSession{r: r}, nil
}

type recordSession struct{ r *recorder }

func (s *recordSession) Reset()                               {}
func (s *recordSession) Logout() error                        { return nil }
func (s *recordSession) Mail(string, *smtp.MailOptions) error { return nil }
func (s *recordSession) Rcpt(to string, _ *smtp.RcptOptions) error {
	if strings.HasPrefix(to, "nobody@") {
		return &smtp.SMTPError{Code: 550, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user"}
	}
	return nil
}

func (s *recordSession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.r.mu.Lock()
	s.r.messages = append(s.r.messages, b)
	n := len(s.r.messages)
	s.r.mu.Unlock()
	if n%5 == 0 {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "try later"}
	}
	return nil
}

func startRecorder(t *testing.T) (*recorder, string) {
	t.Helper()
	l := listenT(t)
	return serveRecorder(t, l), l.Addr().String()
}

// listenT listens on a loopback port for a test.
func listenT(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// serveRecorder serves a recorder on l until the test ends.
func serveRecorder(t *testing.T, l net.Listener) *recorder {
	rec := &recorder{}
	srv := smtp.NewServer(rec)
	srv.Domain = "recorder.localhost"
	srv.MaxMessageBytes = 1 << 20
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return rec
}

func TestLoadCountsRepliesAndMessages(t *testing.T) {
	rec, addr := startRecorder(t)
	l := load{addr: addr, messages: 50, size: 3000, sessions: 3, perConn: 7, from: "a@sender.test", to: "b@bench.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := l.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Every fifth message gets a 451: 40 accepted, 10 refused.
	if res.sent != 50 || res.accepted != 40 || res.refused["451"] != 10 || len(res.latency) != 40 {
		t.Errorf("sent %d, accepted %d, refused %v, %d latencies; want 50, 40, 451 ×10, 40", res.sent, res.accepted, res.refused, len(res.latency))
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if len(rec.messages) != 50 {
		t.Fatalf("server received %d messages, want 50", len(rec.messages))
	}
	// 50 messages at 7 per connection over 3 sessions: at least 8 connections.
	if rec.sessions < 8 {
		t.Errorf("%d connections, want at least 8 (7 messages per connection)", rec.sessions)
	}
	for _, m := range rec.messages {
		if !bytes.HasPrefix(m, []byte("Message-ID: <")) || len(m) < 3000 || !bytes.HasSuffix(m, []byte("\r\n")) {
			t.Fatalf("message of %d bytes starting %q", len(m), m[:40])
		}
	}
	if res.firstAccept.Before(res.start) || res.lastAccept.Before(res.firstAccept) {
		t.Errorf("start %v, first accept %v, last accept %v out of order", res.start, res.firstAccept, res.lastAccept)
	}
}

func TestLoadRefusedRecipient(t *testing.T) {
	rec, addr := startRecorder(t)
	l := load{addr: addr, messages: 4, size: 500, sessions: 2, perConn: 10, from: "a@sender.test", to: "nobody@bench.test"}
	res, err := l.run(context.Background())
	if err == nil {
		t.Errorf("no error when nothing could be sent")
	}
	if res.sent != 0 || res.accepted != 0 || res.refused["envelope 250/550/503"] != 4 {
		t.Errorf("sent %d, accepted %d, refused %v; want 4 refused envelopes", res.sent, res.accepted, res.refused)
	}
	if len(rec.messages) != 0 {
		t.Errorf("server received %d messages", len(rec.messages))
	}
}

func TestLoadRate(t *testing.T) {
	_, addr := startRecorder(t)
	// 20 messages at 100/s: the last is due at 190 ms, the one before at
	// 180 ms, and one of the two is accepted (the server refuses every
	// fifth it receives).
	l := load{addr: addr, messages: 20, size: 500, sessions: 4, perConn: 100, rate: 100, from: "a@sender.test", to: "b@bench.test"}
	res, err := l.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if d := res.lastAccept.Sub(res.start); d < 180*time.Millisecond {
		t.Errorf("20 messages at 100/s done in %v", d)
	}
}

// refuseFirst is a listener that answers its first connection with a
// 421 greeting and closes it, as a busy server does, and hands the
// others to the SMTP server behind it.
type refuseFirst struct {
	net.Listener
	once sync.Once
}

func (l *refuseFirst) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		first := false
		l.once.Do(func() { first = true })
		if !first {
			return c, nil
		}
		c.Write([]byte("421 4.3.2 busy\r\n"))
		c.Close()
	}
}

// A session claims its message before it dials: a connection refused at
// the greeting does not lose it, the next connection sends it.
func TestLoadClaimSurvivesRefusedConnection(t *testing.T) {
	ln := listenT(t)
	rec := serveRecorder(t, &refuseFirst{Listener: ln})
	l := load{addr: ln.Addr().String(), messages: 4, size: 500, sessions: 1, perConn: 10, from: "a@sender.test", to: "b@bench.test"}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := l.run(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	if res.sent != 4 || len(rec.messages) != 4 || res.refused["error: 421"] != 1 {
		t.Errorf("sent %d, server received %d, refused %v; want 4, 4 and one greeting refused", res.sent, len(rec.messages), res.refused)
	}
}

// At a paced rate a session connects when its first message is due, not
// at the start. Each connection follows the due time of a message of its
// own (its session's first), so the k-th connection to open cannot open
// before message k is due: k/rate after the start. (How many sessions
// connect at all depends on which claims which message first.)
func TestLoadDialsWhenDue(t *testing.T) {
	ln := listenT(t)
	var mu sync.Mutex
	var opened []time.Time
	serveRecorder(t, &stampAccept{Listener: ln, stamp: func(t time.Time) { mu.Lock(); opened = append(opened, t); mu.Unlock() }})
	const rate = 40
	l := load{addr: ln.Addr().String(), messages: 4, size: 500, sessions: 4, perConn: 10, rate: rate, from: "a@sender.test", to: "b@bench.test"}
	res, err := l.run(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(opened) < 2 {
		t.Fatalf("%d connections for 4 messages over 4 sessions: the test does not test", len(opened))
	}
	for k, at := range opened {
		if due := time.Duration(k) * time.Second / rate; at.Sub(res.start) < due-time.Millisecond {
			t.Errorf("connection %d opened %v after the start, before message %d was due (%v)", k, at.Sub(res.start), k, due)
		}
	}
}

// stampAccept calls stamp with the time of each connection it accepts.
type stampAccept struct {
	net.Listener
	stamp func(time.Time)
}

func (l *stampAccept) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.stamp(time.Now())
	}
	return c, err
}

func TestMessageBody(t *testing.T) {
	for _, size := range []int{1000, 5 << 10, 100 << 10} {
		b := messageBody(size)
		if len(b) < size || len(b) > size+100 {
			t.Errorf("messageBody(%d) is %d bytes", size, len(b))
		}
		if !bytes.Contains(b, []byte("\r\n\r\n")) || bytes.Contains(b, []byte("\r\n.")) {
			t.Errorf("messageBody(%d): no header/body separator or a line starting with a dot", size)
		}
	}
}

func TestPercentile(t *testing.T) {
	d := func(ms ...int) []time.Duration {
		var out []time.Duration
		for _, m := range ms {
			out = append(out, time.Duration(m)*time.Millisecond)
		}
		return out
	}
	for _, tc := range []struct {
		in   []time.Duration
		p    float64
		want time.Duration
	}{
		{nil, 50, 0},
		{d(7), 99, 7 * time.Millisecond},
		{d(5, 1, 4, 2, 3), 50, 3 * time.Millisecond},
		{d(5, 1, 4, 2, 3), 100, 5 * time.Millisecond},
		{d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 99, 10 * time.Millisecond},
		{d(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
	} {
		if got := percentile(tc.in, tc.p); got != tc.want {
			t.Errorf("percentile(%v, %v) = %v, want %v", tc.in, tc.p, got, tc.want)
		}
	}
}
