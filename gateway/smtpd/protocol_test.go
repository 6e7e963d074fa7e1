package smtpd

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailgate/mailgate/stages/testkit"
)

// connect opens a connection and reads the greeting, without EHLO.
func connect(t *testing.T, ts *testServer) *client { return testkit.DialSMTP(t, ts.addr.String()) }

// waitMessageFiles waits until the spool holds n message files: a message
// in progress has one, an aborted one none.
func waitMessageFiles(t *testing.T, ts *testServer, n int) {
	t.Helper()
	dir := filepath.Dir(ts.spool.MessagePath("x"))
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		files, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		if len(files) == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d message files in the spool, want %d", len(files), n)
		}
	}
}

// A client that goes away in the middle of a BDAT chunk was never told
// its message was taken: what arrived of it must not be queued, or an
// honest client's retry delivers it twice, once cut.
func TestBDATTruncated(t *testing.T) {
	ts := serve(t, "")
	start := func() *client {
		c := dial(t, ts)
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		c.Send("BDAT 100000 LAST\r\nSubject: t\r\n\r\nfirst line only\r\n")
		return c
	}
	// Half-closed, the client still reads what it is told.
	c := start()
	c.HalfClose()
	if out := c.Rest(); strings.Contains(out, "250 ") {
		t.Errorf("a truncated chunk was answered %q", out)
	}
	// Gone altogether: the message file goes away uncommitted.
	c = start()
	c.Conn.Close()
	waitMessageFiles(t, ts, 0)
	if q := ts.queue.queued(); len(q) != 0 {
		t.Fatalf("%d truncated messages queued", len(q))
	}
}

// A command line cut short by the command timeout (or by the end of the
// connection) is not a command: the client gets 421 4.4.2 and the
// connection is closed; nothing acts on the fragment.
func TestCommandFragment(t *testing.T) {
	// Long enough for a loaded machine between two commands; the test
	// waits it out twice.
	ts := serve(t, "[server]\ncommand_timeout = \"2s\"\n")
	c := connect(t, ts)
	c.Send("EHLO cli")
	if out := c.Rest(); !strings.HasPrefix(out, "421 4.4.2 ") || strings.Count(out, "\r\n") != 1 {
		t.Errorf("EHLO fragment: got %q, want one 421 4.4.2 and the end", out)
	}
	c = dial(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Send("RCPT TO:<user@examp")
	if out := c.Rest(); !strings.HasPrefix(out, "421 4.4.2 ") || strings.Count(out, "\r\n") != 1 {
		t.Errorf("RCPT fragment: got %q, want one 421 4.4.2 and the end", out)
	}
	// At the end of the connection a fragment is dropped, not run.
	c = dial(t, ts)
	c.Send("NOOP")
	c.HalfClose()
	if out := c.Rest(); out != "" {
		t.Errorf("NOOP fragment before the end: got %q, want nothing", out)
	}
}

// data_timeout: a client that stalls inside the message is told 421 4.4.2
// before the connection is closed, in DATA and in the middle of a BDAT
// chunk (where the rest of the chunk must never be read as commands).
func TestDataTimeoutReply(t *testing.T) {
	ts := serve(t, "[server]\ndata_timeout = \"1s\"\n")
	c := dial(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Cmd("DATA", "354")
	c.Send("Subject: x\r\n\r\npartial")
	if out := c.Rest(); !strings.HasPrefix(out, "421 4.4.2 ") || strings.Count(out, "\r\n") != 1 {
		t.Errorf("DATA stalled: got %q, want one 421 4.4.2 and the end", out)
	}
	c = dial(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Send("BDAT 100 LAST\r\nSubject: x\r\n")
	if out := c.Rest(); !strings.HasPrefix(out, "421 4.4.2 ") || strings.Count(out, "\r\n") != 1 {
		t.Errorf("BDAT stalled: got %q, want one 421 4.4.2 and the end", out)
	}
	waitMessageFiles(t, ts, 0)
}

// data_total_timeout: a client that keeps sending, a byte at a time, is
// cut when the whole message takes too long, in DATA and across BDAT
// chunks: 421 4.4.2, then the connection is closed.
func TestDataTotalTimeout(t *testing.T) {
	ts := serve(t, "[server]\ndata_timeout = \"1m\"\ndata_total_timeout = \"1s\"\n")
	for _, cmd := range []string{"DATA", "BDAT"} {
		c := dial(t, ts)
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		piece := "BDAT 1\r\nx"
		if cmd == "DATA" {
			c.Cmd("DATA", "354")
			piece = "x"
		}
		stop, done := make(chan struct{}), make(chan struct{})
		go func() { // the slow client
			defer close(done)
			for {
				if _, err := c.Conn.Write([]byte(piece)); err != nil {
					return
				}
				select {
				case <-stop:
					return
				case <-time.After(50 * time.Millisecond):
				}
			}
		}()
		out := c.Rest()
		close(stop)
		<-done
		lines := strings.Split(strings.TrimSuffix(out, "\r\n"), "\r\n")
		if last := lines[len(lines)-1]; !strings.HasPrefix(last, "421 4.4.2 ") {
			t.Errorf("%s trickled: last reply %q, want 421 4.4.2 (all: %q)", cmd, last, out)
		}
	}
	waitMessageFiles(t, ts, 0)
	if q := ts.queue.queued(); len(q) != 0 {
		t.Fatalf("%d messages queued", len(q))
	}
}

// data_timeout is the time without a byte from the client: a slow client
// that keeps sending is not cut, however long the message takes (up to
// data_total_timeout).
func TestDataTimeoutIsIdle(t *testing.T) {
	ts := serve(t, "[server]\ndata_timeout = \"2s\"\n")
	const head, slow = "Subject: slow\r\n\r\n", "xxxxxxxxxxxxxxxxxxxxxxxxx\r\n"
	for _, cmd := range []string{"DATA", "BDAT"} {
		c := dial(t, ts)
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		if cmd == "DATA" {
			c.Cmd("DATA", "354")
		} else {
			c.Send(fmt.Sprintf("BDAT %d LAST\r\n", len(head)+len(slow)))
		}
		c.Send(head)
		// 2.7 s in all, over data_timeout, never 2 s without a byte.
		for i := 0; i < len(slow); i++ {
			time.Sleep(100 * time.Millisecond)
			c.Send(slow[i : i+1])
		}
		if cmd == "DATA" {
			c.Send(".\r\n")
		}
		c.Expect("250 2.0.0 Ok: queued as ")
	}
}

// RFC 5321 §4.3.2: a command out of sequence is answered 503 (bad sequence
// of commands), not 502 (not implemented).
func TestOutOfSequence(t *testing.T) {
	ts := serve(t, "")
	c := connect(t, ts)
	c.Cmd("MAIL FROM:<a@sender.test>", "503 5.5.1 ") // before EHLO
	c.Cmd("RCPT TO:<b@dest.test>", "503 5.5.1 ")
	c.Cmd("DATA", "503 5.5.1 ")
	c.Send("BDAT 3 LAST\r\nabc") // refused, its chunk skipped
	c.Expect("503 5.5.1 ")
	c.Cmd("AUTH PLAIN AAAA", "503 5.5.1 ")
	c.Cmd("EHLO client.test", "250")
	c.Cmd("RCPT TO:<b@dest.test>", "503 5.5.1 ") // before MAIL
	c.Cmd("DATA", "503 5.5.1 ")
	c.Send("BDAT 3 LAST\r\nabc")
	c.Expect("503 5.5.1 ")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "503 5.5.1 ") // nested MAIL
	c.Cmd("DATA", "503 5.5.1 ")                      // before RCPT
	c.Send("BDAT 3 LAST\r\nabc")
	c.Expect("503 5.5.1 ")
	c.Cmd("RCPT TO:<unknown@dest.test>", "550 ")
	c.Cmd("DATA", "503 5.5.1 ") // no recipient taken
	c.Cmd("RCPT TO:<b@dest.test>", "250")
	c.Send("BDAT 5\r\nabcde")
	c.Expect("250 ")
	c.Cmd("MAIL FROM:<a@sender.test>", "503 5.5.1 ") // during BDAT
	c.Cmd("RCPT TO:<c@dest.test>", "503 5.5.1 ")
	c.Cmd("DATA", "503 5.5.1 ")
	c.Send("BDAT 2 LAST\r\n\r\n")
	c.Expect("250 2.0.0 Ok: queued as ")
	if q := ts.queue.queued(); len(q) != 1 || len(q[0].Rcpts) != 1 {
		t.Fatalf("queued %+v, want the one message to b@dest.test", q)
	}
}

type smugglingVectors struct {
	Variants []struct {
		Name   string `yaml:"name"`
		Inject string `yaml:"inject"`
	} `yaml:"eod_variants"`
}

// bareLineEnd reports a CR not followed by LF or an LF not preceded by CR.
func bareLineEnd(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '\n' && (i == 0 || s[i-1] != '\r') || s[i] == '\r' && (i+1 == len(s) || s[i+1] != '\n') {
			return true
		}
	}
	return false
}

// Every end-of-DATA variant of the shared smuggling vectors, in both
// bare_lf modes, in DATA and in BDAT, behaves as README "Line ends and
// SMTP smuggling" says: one message, never a second transaction; reject
// refuses any bare CR or LF with 550 5.5.2; normalize turns a bare LF
// into CRLF and a bare CR into a space. DATA also undoes dot-stuffing of
// lines that start after a CRLF (RFC 5321 §4.5.2); BDAT has none.
func TestSmugglingVectors(t *testing.T) {
	b, err := os.ReadFile("testdata/smtp-smuggling-vectors.yml")
	if err != nil {
		t.Fatal(err)
	}
	var vectors smugglingVectors
	if err := yaml.Unmarshal(b, &vectors); err != nil {
		t.Fatal(err)
	}
	// What the inject becomes in the spooled message, normalized.
	want := map[string]struct{ data, bdat string }{
		"lflf":        {"\r\n.\r\n", "\r\n.\r\n"},
		"crcr":        {" . ", " . "},
		"crlf_bare":   {" .\r\n", " .\r\n"},
		"lfcr":        {"\r\n. ", "\r\n. "},
		"lfcrlf":      {"\r\n.\r\n", "\r\n.\r\n"},
		"crlflf":      {"\r\n\r\n", "\r\n.\r\n"},
		"crcrlf":      {" .\r\n", " .\r\n"},
		"crlfcr":      {"\r\n ", "\r\n. "},
		"nullbefore":  {"\r\n\x00.\r\n", "\r\n\x00.\r\n"},
		"nullafter":   {"\r\n\x00\r\n", "\r\n.\x00\r\n"},
		"crlf_crcrlf": {"\r\n \r\n", "\r\n. \r\n"},
		"crcrlf_x2":   {" \r\n. \r\n", " \r\n. \r\n"},
		"xxx_lflf":    {"xxx\r\n.\r\n", "xxx\r\n.\r\n"},
	}
	if len(vectors.Variants) != len(want) {
		t.Fatalf("%d vectors loaded, %d expected results", len(vectors.Variants), len(want))
	}
	const head = "Subject: carrier\r\n\r\nfirst line\r\n"
	const smuggled = "MAIL FROM:<evil@sender.test>\r\nRCPT TO:<victim@dest.test>\r\nDATA\r\n" +
		"Subject: smuggled\r\n\r\nsmuggled body\r\n"
	for _, mode := range []string{"normalize", "reject"} {
		ts := serve(t, "[server]\nbare_lf = \""+mode+"\"\n")
		queued := 0
		for _, v := range vectors.Variants {
			w, ok := want[v.Name]
			if !ok {
				t.Fatalf("vector %s has no expected result", v.Name)
			}
			for _, cmd := range []string{"DATA", "BDAT"} {
				name := fmt.Sprintf("%s %s %s", mode, cmd, v.Name)
				body := head + v.Inject + smuggled
				c := dial(t, ts)
				c.Cmd("MAIL FROM:<a@sender.test>", "250")
				c.Cmd("RCPT TO:<b@dest.test>", "250")
				if cmd == "DATA" {
					c.Cmd("DATA", "354")
					c.Send(body + ".\r\n")
				} else {
					c.Send(fmt.Sprintf("BDAT %d LAST\r\n%s", len(body), body))
				}
				r := c.Reply()
				c.Cmd("QUIT", "221")
				if mode == "reject" && bareLineEnd("\r\n"+v.Inject+"M") {
					if !strings.HasPrefix(r, "550 5.5.2 ") {
						t.Errorf("%s: %q, want 550 5.5.2", name, r)
					}
					continue
				}
				if !strings.HasPrefix(r, "250 2.0.0 Ok: queued as ") {
					t.Errorf("%s: %q, want the message queued", name, r)
					continue
				}
				queued++
				q := ts.queue.queued()
				if len(q) != queued {
					t.Fatalf("%s: %d messages queued, want %d", name, len(q), queued)
				}
				env := q[queued-1]
				if env.From != "a@sender.test" || len(env.Rcpts) != 1 || env.Rcpts[0].Addr != "b@dest.test" {
					t.Errorf("%s: queued %s -> %+v", name, env.From, env.Rcpts)
				}
				got, err := os.ReadFile(ts.spool.MessagePath(env.ID))
				if err != nil {
					t.Fatal(err)
				}
				inject := w.data
				if cmd == "BDAT" {
					inject = w.bdat
				}
				if !strings.HasSuffix(string(got), head+inject+smuggled) {
					t.Errorf("%s: spooled\n%q\nwant it to end in\n%q", name, got, head+inject+smuggled)
				}
			}
		}
	}
}
