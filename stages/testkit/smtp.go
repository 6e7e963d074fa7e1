package testkit

import (
	"bufio"
	"errors"
	"io"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"
)

// SMTPClient is a raw SMTP client for tests: it writes exactly the bytes a
// test gives it, so tests can send what well-behaved libraries refuse to
// (smuggling vectors, bare LF, fragments, oversize data). Every method
// fails the test on an I/O error.
type SMTPClient struct {
	t    testing.TB
	Conn net.Conn
	r    *bufio.Reader
}

// ioTimeout bounds each read and write of an SMTPClient: a bound per
// operation, not per connection, so that a test that keeps one connection
// through slow steps (a dry run starting plugins) does not run out of it
// on a loaded machine.
const ioTimeout = time.Minute

// DialSMTP connects to addr, reads the 220 greeting, and closes the
// connection when the test ends. Every read and write must be done within
// a minute.
func DialSMTP(t testing.TB, addr string) *SMTPClient {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := NewSMTPClient(t, conn)
	c.Expect("220")
	return c
}

// NewSMTPClient is a client over a connection the test made itself (from
// another source address, say); it reads nothing yet.
func NewSMTPClient(t testing.TB, conn net.Conn) *SMTPClient {
	return &SMTPClient{t: t, Conn: conn, r: bufio.NewReader(conn)}
}

// Reply reads one (possibly multi-line) reply and returns its last line.
func (c *SMTPClient) Reply() string {
	c.t.Helper()
	for {
		line, err := c.ReadLine()
		if err != nil {
			c.t.Fatalf("read reply: %v", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 4 || line[3] != '-' {
			return line
		}
	}
}

// Expect reads a reply and fails the test unless it starts with prefix.
func (c *SMTPClient) Expect(prefix string) string {
	c.t.Helper()
	r := c.Reply()
	if !strings.HasPrefix(r, prefix) {
		c.t.Fatalf("got reply %q, want %q", r, prefix)
	}
	return r
}

// Send writes s as it is.
func (c *SMTPClient) Send(s string) {
	c.t.Helper()
	c.Conn.SetWriteDeadline(time.Now().Add(ioTimeout))
	if _, err := c.Conn.Write([]byte(s)); err != nil {
		c.t.Fatalf("write: %v", err)
	}
}

// Cmd sends line with CRLF and expects a reply starting with want.
func (c *SMTPClient) Cmd(line, want string) string {
	c.t.Helper()
	c.Send(line + "\r\n")
	return c.Expect(want)
}

// TrySend runs one whole transaction and returns the first reply that is
// not a success: the refusal of MAIL, a RCPT or the data, or the final
// reply to the data. After a refusal the transaction is reset.
func (c *SMTPClient) TrySend(from string, to []string, data string) string {
	c.t.Helper()
	steps := []string{"MAIL FROM:<" + from + ">"}
	for _, rc := range to {
		steps = append(steps, "RCPT TO:<"+rc+">")
	}
	for _, s := range append(steps, "DATA") {
		c.Send(s + "\r\n")
		if r := c.Reply(); r[0] != '2' && r[0] != '3' {
			c.Cmd("RSET", "250")
			return r
		}
	}
	c.Send(data + ".\r\n")
	return c.Reply()
}

// SendMail runs one whole transaction that must be accepted up to DATA
// and returns the reply to the data (data ends with CRLF; SendMail adds
// the final dot).
func (c *SMTPClient) SendMail(from string, to []string, data string) string {
	c.t.Helper()
	c.Cmd("MAIL FROM:<"+from+">", "250")
	for _, rc := range to {
		c.Cmd("RCPT TO:<"+rc+">", "250")
	}
	c.Cmd("DATA", "354")
	c.Send(data + ".\r\n")
	return c.Reply()
}

// Rest reads until the server closes the connection and returns what it
// wrote; a server that does not close fails the test at the deadline. A
// reset counts as closed: a server that closes with bytes of the client
// unread resets the connection, after what it wrote.
func (c *SMTPClient) Rest() string {
	c.t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	b, err := io.ReadAll(c.r)
	if err != nil && !errors.Is(err, syscall.ECONNRESET) {
		c.t.Fatalf("read until the server closes: %v (read %q)", err, b)
	}
	return string(b)
}

// HalfClose ends what the client sends; it still reads the replies.
func (c *SMTPClient) HalfClose() {
	c.t.Helper()
	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		c.t.Fatal(err)
	}
}

// ReadLine reads one raw line, line end included, for tests that look at
// the bytes of a reply; unlike Reply it returns the error.
func (c *SMTPClient) ReadLine() (string, error) {
	if c.r.Buffered() == 0 {
		c.Conn.SetReadDeadline(time.Now().Add(ioTimeout))
	}
	return c.r.ReadString('\n')
}

// Upgrade goes on over conn, such as a TLS client over Conn after
// STARTTLS.
func (c *SMTPClient) Upgrade(conn net.Conn) { c.Conn, c.r = conn, bufio.NewReader(conn) }

// SetTest makes the client fail t from now on: a subtest that uses its
// parent's connection.
func (c *SMTPClient) SetTest(t testing.TB) { c.t = t }
