package smtptest

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/emersion/go-smtp"
)

func send(t *testing.T, addr, from string, rcpts []string, data string) error {
	t.Helper()
	c, err := smtp.Dial(addr)
	if err != nil {
		return err
	}
	defer c.Close()
	if err := c.Hello("client.test"); err != nil {
		return err
	}
	return c.SendMail(from, rcpts, strings.NewReader(data))
}

func TestServer(t *testing.T) {
	s := NewServer(t)
	s.SetRcptReply("Bad@x.test", 550)
	data := "Subject: hi\r\n\r\n.dot\r\nbody\r\n"
	if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test", "bad@x.test"}, data); err == nil {
		t.Fatal("SendMail with a refused recipient succeeded")
	} else {
		var se *smtp.SMTPError
		if !errors.As(err, &se) || se.Code != 550 || se.EnhancedCode != (smtp.EnhancedCode{5, 1, 1}) {
			t.Fatalf("refused recipient: %v", err)
		}
	}
	s.SetRcptReply("bad@x.test", 0)
	if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test", "bad@x.test"}, data); err != nil {
		t.Fatal(err)
	}
	m := s.WaitFor(1, time.Second)[0]
	if m.From != "a@x.test" || strings.Join(m.Rcpts, ",") != "b@x.test,bad@x.test" || string(m.Data) != data || m.Helo != "client.test" || m.TLS {
		t.Errorf("recorded %+v", m)
	}

	s.SetDataReply(451)
	if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test"}, data); err == nil {
		t.Error("DATA accepted while SetDataReply(451)")
	}
	s.SetDataReply(0)

	s.Stop()
	if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test"}, data); err == nil {
		t.Error("stopped server accepted a message")
	}
	s.Restart()
	if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test"}, data); err != nil {
		t.Fatalf("after Restart: %v", err)
	}
	if n := len(s.WaitFor(2, time.Second)); n != 2 {
		t.Errorf("%d messages, want 2", n)
	}
	if n := s.Connections(); n != 4 {
		t.Errorf("%d connections, want 4", n)
	}
}

func TestTranscripts(t *testing.T) {
	s := NewServer(t)
	for i := range 2 {
		if err := send(t, s.Addr(), "a@x.test", []string{"b@x.test"}, "Subject: hi\r\n\r\n.dot\r\n"); err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
	}
	w := s.Transcripts()
	if len(w) != 2 {
		t.Fatalf("%d transcripts, want one per connection", len(w))
	}
	for _, want := range []string{"EHLO client.test\r\n", "MAIL FROM:<a@x.test>", "RCPT TO:<b@x.test>\r\n", "\r\n..dot\r\n.\r\n"} {
		if !strings.Contains(w[0], want) {
			t.Errorf("no %q in\n%s", want, w[0])
		}
	}
}
