package smtp_test

// Tests of the mailgate patches (PATCHES.md), one per patch where a
// test at this level can show it.

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

// conv is the client side of a conversation: it writes lines and
// reads whole replies.
type conv struct {
	t *testing.T
	c net.Conn
	r *bufio.Reader
}

func newConv(t *testing.T, c net.Conn) *conv {
	c.SetDeadline(time.Now().Add(30 * time.Second)) // an upper bound for a loaded machine
	return &conv{t: t, c: c, r: bufio.NewReader(c)}
}

// cmd sends line and checks that the reply's last line starts with want.
func (v *conv) cmd(line, want string) {
	v.t.Helper()
	io.WriteString(v.c, line+"\r\n")
	v.expect(line, want)
}

func (v *conv) expect(what, want string) {
	v.t.Helper()
	for {
		l, err := v.r.ReadString('\n')
		if err != nil {
			v.t.Fatalf("%s: %v", what, err)
		}
		if len(l) < 4 || l[3] != '-' {
			if !strings.HasPrefix(l, want) {
				v.t.Fatalf("%s: got %q, want %q", what, l, want)
			}
			return
		}
	}
}

// rest returns what the server writes until it closes.
func (v *conv) rest() string {
	v.t.Helper()
	b, err := io.ReadAll(v.r)
	if err != nil {
		v.t.Fatalf("server did not close: %v (read %q)", err, b)
	}
	return string(b)
}

// Patch 1: a BDAT chunk cut short by the end of the connection is an
// error for the backend, not the end of the message.
func TestPatchBdatShortChunk(t *testing.T) {
	be, s, c, _, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()
	be.dataErrors = make(chan error, 10)
	v := newConv(t, c)
	v.cmd("MAIL FROM:<a@example.org>", "250 ")
	v.cmd("RCPT TO:<b@example.org>", "250 ")
	io.WriteString(c, "BDAT 100 LAST\r\nSubject: cut\r\n")
	c.(*net.TCPConn).CloseWrite()
	if err := <-be.dataErrors; err != io.ErrUnexpectedEOF {
		t.Fatalf("backend got %v, want io.ErrUnexpectedEOF", err)
	}
	if out := v.rest(); strings.HasPrefix(out, "250") {
		t.Fatalf("truncated chunk answered %q", out)
	}
	if len(be.messages)+len(be.anonmsgs) != 0 {
		t.Fatal("a truncated message was taken")
	}
}

// Patch 1: a refused chunk that does not arrive whole closes the
// connection; its rest is never read as commands.
func TestPatchBdatRefusedShortChunk(t *testing.T) {
	// The test waits for the timeout once; EHLO must come before it, on
	// a loaded machine too.
	_, s, c, _ := testServerGreeted(t, func(s *smtp.Server) { s.ReadTimeout = 2 * time.Second })
	defer s.Close()
	defer c.Close()
	v := newConv(t, c)
	v.cmd("EHLO localhost", "250 ")
	io.WriteString(c, "BDAT 100 LAST\r\nNOOP\r\n")
	v.expect("BDAT", "503 ")
	if out := v.rest(); out != "" {
		t.Fatalf("after the refused chunk stalled: %q, want the end", out)
	}
}

// Patch 3: a command line cut short by the read deadline is not run.
func TestPatchPartialLine(t *testing.T) {
	_, s, c, _ := testServerGreeted(t, func(s *smtp.Server) { s.ReadTimeout = 500 * time.Millisecond })
	defer s.Close()
	defer c.Close()
	v := newConv(t, c)
	io.WriteString(c, "EHLO cli")
	if out := v.rest(); out != "421 4.4.2 Idle timeout, bye bye\r\n" {
		t.Fatalf("fragment answered %q, want only 421 4.4.2", out)
	}
}

// Patch 4: "." CR not followed by LF at the start of a line loses its
// dot (dot-stuffing) but keeps the CR.
func TestPatchDotCR(t *testing.T) {
	be, s, c, _, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()
	v := newConv(t, c)
	v.cmd("MAIL FROM:<a@example.org>", "250 ")
	v.cmd("RCPT TO:<b@example.org>", "250 ")
	v.cmd("DATA", "354 ")
	v.cmd("a\r\n.\rb\r\n.\r\r\n.", "250 ")
	if len(be.anonmsgs) != 1 || string(be.anonmsgs[0].Data) != "a\r\n\rb\r\n\r\r\n" {
		t.Fatalf("messages %+v, want one with a\\r\\n\\rb\\r\\n\\r\\r\\n", be.anonmsgs)
	}
}

// Patch 5: commands out of sequence get 503 (RFC 5321 §4.3.2).
func TestPatchOutOfSequence(t *testing.T) {
	_, s, c, _ := testServerGreeted(t)
	defer s.Close()
	defer c.Close()
	v := newConv(t, c)
	v.cmd("MAIL FROM:<a@example.org>", "503 5.5.1 ")
	v.cmd("EHLO localhost", "250 ")
	v.cmd("RCPT TO:<b@example.org>", "503 5.5.1 ")
	v.cmd("DATA", "503 5.5.1 ")
	v.cmd("MAIL FROM:<a@example.org>", "250 ")
	v.cmd("MAIL FROM:<a@example.org>", "503 5.5.1 ")
	v.cmd("DATA", "503 5.5.1 ")
	v.cmd("RCPT TO:<b@example.org>", "250 ")
	io.WriteString(c, "BDAT 1\r\nx")
	v.expect("BDAT", "250 ")
	v.cmd("MAIL FROM:<a@example.org>", "503 5.5.1 ")
	v.cmd("RCPT TO:<c@example.org>", "503 5.5.1 ")
	v.cmd("DATA", "503 5.5.1 ")
}

// Patch 6: a 421 from the backend reaches the client, then the
// connection is closed.
func TestPatch421Closes(t *testing.T) {
	for _, cmd := range []string{"DATA", "BDAT"} {
		be, s, c, _, _ := testServerEhlo(t)
		be.dataErr = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 4, 2}, Message: "Timeout"}
		v := newConv(t, c)
		v.cmd("MAIL FROM:<a@example.org>", "250 ")
		v.cmd("RCPT TO:<b@example.org>", "250 ")
		if cmd == "DATA" {
			v.cmd("DATA", "354 ")
		} else {
			io.WriteString(c, "BDAT 3 LAST\r\nx\r\n")
		}
		if out := v.rest(); out != "421 4.4.2 Timeout\r\n" {
			t.Errorf("%s: got %q, want 421 4.4.2 and the end", cmd, out)
		}
		c.Close()
		s.Close()
	}
}

// Patch 6, at MAIL: a 421 from Session.Mail (a rate limit with action
// disconnect) reaches the client, then the connection is closed.
func TestPatch421ClosesAtMail(t *testing.T) {
	be, s, c, _, _ := testServerEhlo(t)
	defer s.Close()
	defer c.Close()
	be.userErr = &smtp.SMTPError{Code: 421, EnhancedCode: smtp.EnhancedCode{4, 7, 0}, Message: "Bye"}
	v := newConv(t, c)
	io.WriteString(c, "MAIL FROM:<a@example.org>\r\n")
	if out := v.rest(); out != "421 4.7.0 Bye\r\n" {
		t.Errorf("got %q, want 421 4.7.0 and the end", out)
	}
}

// scriptedServer accepts one client on loopback, greets it, answers EHLO
// with ehlo's extensions, then reads commands until DATA before it
// answers any of them, from replies (a reply per command, in order): a
// client that waited for the reply to MAIL would never get it (the test
// fails at the deadline). After a 354 it reads the message up to its
// dot, answers 250, then records the rest until the client closes. It
// returns the address and a channel with everything the client sent
// after EHLO.
func scriptedServer(t *testing.T, ehlo string, replies ...string) (string, <-chan string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	got := make(chan string, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			got <- err.Error()
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(30 * time.Second))
		r := bufio.NewReader(c)
		var sent strings.Builder
		io.WriteString(c, "220 scripted ESMTP\r\n")
		r.ReadString('\n') // EHLO
		io.WriteString(c, "250-scripted\r\n"+ehlo+"250 8BITMIME\r\n")
		var group []string
		for len(replies) > 0 {
			l, err := r.ReadString('\n')
			if err != nil {
				break
			}
			sent.WriteString(l)
			group = append(group, l)
			if strings.TrimSpace(l) != "DATA" && len(group) < len(replies) && strings.Contains(ehlo, "PIPELINING") {
				continue
			}
			// The group is read: answer each of its commands.
			for range group {
				reply := replies[0]
				replies = replies[1:]
				// "~300ms 250 ok": a server that takes its time to answer.
				if d, rest, ok := strings.Cut(reply, " "); ok && strings.HasPrefix(d, "~") {
					wait, _ := time.ParseDuration(d[1:])
					time.Sleep(wait)
					reply = rest
				}
				io.WriteString(c, reply+"\r\n")
				if strings.HasPrefix(reply, "354") {
					for {
						l, err := r.ReadString('\n')
						sent.WriteString(l)
						if err != nil || l == ".\r\n" {
							break
						}
					}
					io.WriteString(c, "250 2.0.0 queued\r\n")
				}
			}
			group = nil
		}
		rest, _ := io.ReadAll(r)
		sent.Write(rest)
		got <- sent.String()
	}()
	return l.Addr().String(), got
}

func codeOf(err error) int {
	if se, ok := err.(*smtp.SMTPError); ok {
		return se.Code
	}
	return 0
}

// Patch 9: with PIPELINING, MAIL, every RCPT and DATA go before any reply
// is read, and each recipient gets its own reply.
func TestPatchPipelining(t *testing.T) {
	addr, got := scriptedServer(t, "250-PIPELINING\r\n",
		"250 2.1.0 ok", "250 2.1.5 ok", "550 5.1.1 no such user", "451 4.3.0 later", "250 2.1.5 ok", "354 go ahead")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	c.CommandTimeout = 30 * time.Second
	r, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org", "bad@example.org", "later@example.org", "c@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if r.Mail != nil || r.Data != nil || r.Writer == nil {
		t.Fatalf("mail %v, data %v, writer %v", r.Mail, r.Data, r.Writer)
	}
	for i, want := range []int{0, 550, 451, 0} {
		if codeOf(r.Rcpts[i]) != want || (want == 0) != (r.Rcpts[i] == nil) {
			t.Errorf("recipient %d: %v, want code %d", i, r.Rcpts[i], want)
		}
	}
	io.WriteString(r.Writer, "Subject: x\r\n\r\nbody\r\n")
	if _, err := r.Writer.CloseWithResponse(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	want := "MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nRCPT TO:<bad@example.org>\r\n" +
		"RCPT TO:<later@example.org>\r\nRCPT TO:<c@example.org>\r\nDATA\r\nSubject: x\r\n\r\nbody\r\n.\r\n"
	if s := <-got; s != want {
		t.Fatalf("server read %q, want %q", s, want)
	}
}

// Patch 9: RFC 2920 §3.1, a server that answers DATA with 354 though every
// recipient was refused gets a lone dot, and no message.
func TestPatchPipeliningDataWithoutRecipients(t *testing.T) {
	addr, got := scriptedServer(t, "250-PIPELINING\r\n", "250 2.1.0 ok", "550 5.1.1 no", "354 go ahead")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if codeOf(r.Rcpts[0]) != 550 || r.Writer != nil || r.Data == nil {
		t.Fatalf("rcpt %v, writer %v, data %v", r.Rcpts[0], r.Writer, r.Data)
	}
	c.Close()
	if s := <-got; s != "MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n.\r\n" {
		t.Fatalf("server read %q", s)
	}
}

// Patch 9: without PIPELINING each command waits for its reply, and a
// refused MAIL ends the transaction there.
func TestPatchPipeliningNotOffered(t *testing.T) {
	addr, got := scriptedServer(t, "", "553 5.1.8 bad sender")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	r, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if codeOf(r.Mail) != 553 || r.Rcpts[0] != nil || r.Data != nil || r.Writer != nil {
		t.Fatalf("replies %+v", r)
	}
	c.Close()
	if s := <-got; s != "MAIL FROM:<a@example.org> BODY=8BITMIME\r\n" {
		t.Fatalf("server read %q", s)
	}
}

// Patch 9: an envelope with an address the client will not write (a line
// break would inject a command) is a *NotSentError, nothing reaches the
// server, and the session goes on with the next envelope.
func TestPatchPipeliningNotSent(t *testing.T) {
	addr, got := scriptedServer(t, "250-PIPELINING\r\n", "250 2.1.0 ok", "250 2.1.5 ok", "354 go ahead")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	for _, env := range [][]string{{"a@example.org\r\nRSET", "b@example.org"}, {"a@example.org", "b@example.org\nRSET"}} {
		r, err := c.SendEnvelope(env[0], nil, env[1:])
		var ns *smtp.NotSentError
		if !errors.As(err, &ns) || r.Answered != 0 {
			t.Fatalf("envelope %q: %v (%T), %d answered; want a *NotSentError before any reply", env, err, err, r.Answered)
		}
	}
	r, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org"})
	if err != nil || r.Writer == nil {
		t.Fatalf("the next envelope on the session: %+v, %v", r, err)
	}
	io.WriteString(r.Writer, "\r\nbody\r\n")
	if _, err := r.Writer.CloseWithResponse(); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if s := <-got; s != "MAIL FROM:<a@example.org> BODY=8BITMIME\r\nRCPT TO:<b@example.org>\r\nDATA\r\n\r\nbody\r\n.\r\n" {
		t.Fatalf("server read %q", s)
	}
}

// writeCounter counts the writes to the connections a listener accepts.
type writeCounter struct {
	net.Listener
	writes chan int // each write's length
}

func (l *writeCounter) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	return &countedConn{c, l.writes}, err
}

type countedConn struct {
	net.Conn
	writes chan int
}

func (c *countedConn) Write(p []byte) (int, error) {
	c.writes <- len(p)
	return c.Conn.Write(p)
}

// Patch 10: the replies to MAIL, RCPT and DATA sent in one group go back
// in one write; a MAIL on its own is answered at once.
func TestPatchPipelinedReplies(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	wl := &writeCounter{l, make(chan int, 100)}
	s := smtp.NewServer(new(backend))
	s.Domain = "localhost"
	go s.Serve(wl)
	defer s.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	v := newConv(t, c)
	v.expect("greeting", "220 ")
	v.cmd("EHLO localhost", "250 ")
	for len(wl.writes) > 0 {
		<-wl.writes
	}
	io.WriteString(c, "MAIL FROM:<a@example.org>\r\nRCPT TO:<b@example.org>\r\nDATA\r\n")
	v.expect("MAIL", "250 ")
	v.expect("RCPT", "250 ")
	v.expect("DATA", "354 ")
	if n := len(wl.writes); n != 1 {
		t.Fatalf("%d writes for the replies of one group, want 1", n)
	}
	io.WriteString(c, "Subject: x\r\n\r\nbody\r\n.\r\n")
	v.expect("end of data", "250 ")
	v.cmd("MAIL FROM:<a@example.org>", "250 ")
}

// Patch 9: each reply of a pipelined envelope gets CommandTimeout of its
// own, as each command sent in turn does: a next hop that takes a while
// over every recipient does not fail a long list as a whole.
func TestPatchPipeliningTimeoutPerReply(t *testing.T) {
	addr, _ := scriptedServer(t, "250-PIPELINING\r\n",
		"~400ms 250 2.1.0 ok", "~400ms 250 2.1.5 ok", "~400ms 250 2.1.5 ok", "~400ms 250 2.1.5 ok", "~400ms 354 go ahead")
	c, err := smtp.Dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.CommandTimeout = 1500 * time.Millisecond // less than the 2 s the five replies take
	r, err := c.SendEnvelope("a@example.org", nil, []string{"b@example.org", "c@example.org", "d@example.org"})
	if err != nil {
		t.Fatalf("SendEnvelope: %v", err)
	}
	if r.Mail != nil || r.Data != nil || r.Writer == nil {
		t.Fatalf("mail %v, data %v, writer %v", r.Mail, r.Data, r.Writer)
	}
}
