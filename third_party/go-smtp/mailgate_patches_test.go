package smtp_test

// Tests of the mailgate patches (PATCHES.md), one per patch where a
// test at this level can show it.

import (
	"bufio"
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
