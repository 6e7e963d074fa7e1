package gateway_test

import (
	"bufio"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/smtptest"
)

// FuzzSMTPSession throws arbitrary client input at one running gateway. It
// must never crash a session (go-smtp turns a panic into "421 4.0.0
// Internal server error"), must keep serving, and whatever it relays must
// contain only CRLF line ends.
func FuzzSMTPSession(f *testing.F) {
	for _, s := range []string{
		"EHLO a\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\nSubject: x\r\n\r\nhi\r\n.\r\n",
		"EHLO a\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\nDATA\r\nx\n.\nMAIL FROM:<e@x>\r\n.\r\n",
		"HELO a\r\nMAIL FROM:<> SIZE=99999999999\r\nRCPT TO:<b@dest.test> NOTIFY=NEVER\r\nBDAT 5 LAST\r\nhello",
		"EHLO a\r\nMAIL FROM:<a@sender.test>\r\nRCPT TO:<b@dest.test>\r\nBDAT 3\r\nabcBDAT 0 LAST\r\n",
		"EHLO a\r\nSTARTTLS\r\nAUTH PLAIN AAAA\r\nRSET\r\nNOOP\r\nVRFY x\r\n",
		"EHLO \x00\xff\r\nMAIL FROM:<\xc3\xa9@x> SMTPUTF8\r\nRCPT TO:<\xc3\xa9@dest.test>\r\nDATA\r\n\r\r\n.\r\r\n.\r\n",
	} {
		f.Add([]byte(s))
	}
	down := smtptest.NewServer(f)
	g := startGatewayTB(f, "[server]\nlisten = [\"127.0.0.1:0\"]\ncommand_timeout = \"2s\"\nmax_message_size = \"64KB\"\n"+routeTo(down, "dest.test"))
	addr := g.SMTPAddrs()[0]
	f.Fuzz(func(t *testing.T, in []byte) {
		conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
		if err != nil {
			t.Fatalf("gateway stopped serving: %v", err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(2 * time.Second))
		go func() {
			conn.Write(in)
			conn.Write([]byte("\r\n.\r\nQUIT\r\n"))
			// End of input: whatever state the input left the session
			// in (a BDAT chunk still owed, say), the server reads EOF and
			// closes at once. An execution that waited for a timeout
			// instead would outlive -fuzztime and fail the run.
			conn.(*net.TCPConn).CloseWrite()
		}()
		out, _ := io.ReadAll(bufio.NewReader(conn))
		if strings.Contains(string(out), "Internal server error") {
			t.Fatalf("a session panicked on %q:\n%s", in, out)
		}
		for _, m := range down.Messages() {
			if hasBareLineEnd(m.Data) {
				t.Fatalf("relayed a bare CR or LF: %q", m.Data)
			}
		}
	})
}
