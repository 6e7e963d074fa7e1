// Package smtptest provides a recording SMTP server for tests of mail
// delivery: it keeps every message it accepts, counts the connections it
// gets, records what clients send, can refuse chosen recipients, and can
// go away and come back on the same port. It listens on 127.0.0.1 only.
package smtptest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"log"
	"math/big"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// Message is one message the server accepted.
type Message struct {
	From  string
	Rcpts []string // the accepted recipients
	Data  []byte   // as received, dot-unstuffed, CRLF line ends kept
	Helo  string   // the client's EHLO name
	TLS   bool     // whether the session was under STARTTLS
}

// Server is a recording SMTP server. Its methods are safe for concurrent
// use.
type Server struct {
	t      testing.TB
	addr   string
	tls    *tls.Config
	noUTF8 bool

	mu        sync.Mutex
	srv       *smtp.Server // nil while stopped
	ln        net.Listener
	served    chan struct{}
	msgs      []Message
	rcptReply map[string]int
	dataReply int
	conns     int
	wire      []*strings.Builder // per connection, what the client sent
	changed   chan struct{}      // closed and replaced when a message arrives
}

// Option configures a Server.
type Option func(*Server)

// WithTLS makes the server offer STARTTLS with a self-signed certificate
// for "localhost" and 127.0.0.1.
func WithTLS() Option {
	return func(s *Server) { s.tls = selfSigned(s.t) }
}

// WithoutSMTPUTF8 makes the server not offer SMTPUTF8 (RFC 6531).
func WithoutSMTPUTF8() Option {
	return func(s *Server) { s.noUTF8 = true }
}

// NewServer starts a server on 127.0.0.1 on a free port. It stops when
// the test ends.
func NewServer(t testing.TB, opts ...Option) *Server {
	t.Helper()
	s := &Server{t: t, rcptReply: make(map[string]int), changed: make(chan struct{})}
	for _, o := range opts {
		o(s)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("smtptest: listen: %v", err)
	}
	s.addr = l.Addr().String()
	s.serve(l)
	t.Cleanup(s.Stop)
	return s
}

// Addr returns the server's host:port. It stays the same across Stop and
// Restart.
func (s *Server) Addr() string { return s.addr }

// Port returns the port of Addr.
func (s *Server) Port() string {
	_, port, _ := net.SplitHostPort(s.addr)
	return port
}

// Messages returns a copy of the messages accepted so far, in order.
func (s *Server) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]Message, len(s.msgs))
	for i, m := range s.msgs {
		m.Rcpts = append([]string(nil), m.Rcpts...)
		m.Data = append([]byte(nil), m.Data...)
		out[i] = m
	}
	return out
}

// WaitFor waits until at least n messages were accepted and returns them
// all; it fails the test if that takes longer than timeout. Call it from
// the test's goroutine.
func (s *Server) WaitFor(n int, timeout time.Duration) []Message {
	s.t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		s.mu.Lock()
		got, changed := len(s.msgs), s.changed
		s.mu.Unlock()
		if got >= n {
			return s.Messages()
		}
		select {
		case <-changed:
		case <-deadline.C:
			s.t.Fatalf("smtptest: %d messages after %v, want %d", got, timeout, n)
		}
	}
}

// Connections returns how many TCP connections the server accepted.
func (s *Server) Connections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conns
}

// Transcripts returns what clients sent, one string per connection in
// the order they connected: commands and message data as they came over
// the wire, quotes and dot-stuffing included (encrypted after STARTTLS).
func (s *Server) Transcripts() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, len(s.wire))
	for i, b := range s.wire {
		out[i] = b.String()
	}
	return out
}

// SetRcptReply makes the server answer RCPT TO:<addr> with code (4xx or
// 5xx); 0 accepts the recipient again. 550 comes with the enhanced code
// 5.1.1 (bad mailbox), other codes with X.0.0.
func (s *Server) SetRcptReply(addr string, code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if code == 0 {
		delete(s.rcptReply, strings.ToLower(addr))
		return
	}
	s.rcptReply[strings.ToLower(addr)] = code
}

// SetDataReply makes the server answer the end of DATA with code (4xx or
// 5xx) and not record the message; 0 accepts messages again.
func (s *Server) SetDataReply(code int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.dataReply = code
}

// Stop closes the listener and every connection: from now on connections
// to Addr are refused. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	srv, ln, served := s.srv, s.ln, s.served
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	// Close the listener too: srv.Close misses it if Serve has not
	// registered it yet.
	srv.Close()
	ln.Close()
	<-served
}

// Restart listens on Addr again after Stop.
func (s *Server) Restart() {
	s.t.Helper()
	s.mu.Lock()
	running := s.srv != nil
	s.mu.Unlock()
	if running {
		return
	}
	l, err := net.Listen("tcp", s.addr)
	if err != nil {
		s.t.Fatalf("smtptest: listen again on %s: %v", s.addr, err)
	}
	s.serve(l)
}

func (s *Server) serve(l net.Listener) {
	srv := smtp.NewServer(smtp.BackendFunc(func(c *smtp.Conn) (smtp.Session, error) {
		return &session{s: s, c: c}, nil
	}))
	srv.Domain = "smtptest.localhost"
	srv.ReadTimeout = time.Minute
	srv.WriteTimeout = time.Minute
	srv.MaxLineLength = 1 << 16
	srv.EnableSMTPUTF8 = !s.noUTF8
	srv.TLSConfig = s.tls
	srv.ErrorLog = log.New(io.Discard, "", 0)
	served := make(chan struct{})
	s.mu.Lock()
	s.srv, s.ln, s.served = srv, l, served
	s.mu.Unlock()
	go func() {
		defer close(served)
		srv.Serve(&countingListener{Listener: l, s: s})
	}()
}

type countingListener struct {
	net.Listener
	s *Server
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	w := &strings.Builder{}
	l.s.mu.Lock()
	l.s.conns++
	l.s.wire = append(l.s.wire, w)
	l.s.mu.Unlock()
	return &recordingConn{Conn: c, s: l.s, w: w}, nil
}

// recordingConn keeps what the client sends for Transcripts.
type recordingConn struct {
	net.Conn
	s *Server
	w *strings.Builder // under s.mu
}

func (c *recordingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.s.mu.Lock()
	c.w.Write(p[:n])
	c.s.mu.Unlock()
	return n, err
}

type session struct {
	s     *Server
	c     *smtp.Conn
	from  string
	rcpts []string
}

func (se *session) Reset()        { se.from, se.rcpts = "", nil }
func (se *session) Logout() error { return nil }

func (se *session) Mail(from string, _ *smtp.MailOptions) error {
	se.from, se.rcpts = from, nil
	return nil
}

func (se *session) Rcpt(to string, _ *smtp.RcptOptions) error {
	se.s.mu.Lock()
	code := se.s.rcptReply[strings.ToLower(to)]
	se.s.mu.Unlock()
	if code != 0 {
		return reply(code)
	}
	se.rcpts = append(se.rcpts, to)
	return nil
}

func (se *session) Data(r io.Reader) error {
	data, err := io.ReadAll(r)
	if err != nil {
		return &smtp.SMTPError{Code: 451, EnhancedCode: smtp.EnhancedCode{4, 3, 0}, Message: "read error"}
	}
	_, isTLS := se.c.TLSConnectionState()
	s := se.s
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.dataReply != 0 {
		return reply(s.dataReply)
	}
	s.msgs = append(s.msgs, Message{
		From:  se.from,
		Rcpts: append([]string(nil), se.rcpts...),
		Data:  data,
		Helo:  se.c.Hostname(),
		TLS:   isTLS,
	})
	close(s.changed)
	s.changed = make(chan struct{})
	return nil
}

func reply(code int) *smtp.SMTPError {
	if code == 550 {
		return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{5, 1, 1}, Message: "no such user here"}
	}
	return &smtp.SMTPError{Code: code, EnhancedCode: smtp.EnhancedCode{code / 100, 0, 0}, Message: "test reply"}
}

// selfSigned makes a certificate for localhost and 127.0.0.1.
func selfSigned(t testing.TB) *tls.Config {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("smtptest: key: %v", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatalf("smtptest: certificate: %v", err)
	}
	return &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
}
