package clamdtest

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

// instream scans data with clamd's INSTREAM command and returns the reply.
func instream(t *testing.T, network, address, data string) string {
	t.Helper()
	conn, err := net.DialTimeout(network, address, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	var msg []byte
	msg = append(msg, "zINSTREAM\x00"...)
	msg = binary.BigEndian.AppendUint32(msg, uint32(len(data)))
	msg = append(msg, data...)
	msg = binary.BigEndian.AppendUint32(msg, 0)
	if _, err := conn.Write(msg); err != nil {
		t.Fatal(err)
	}
	reply, err := io.ReadAll(conn)
	if err != nil {
		t.Fatal(err)
	}
	return string(reply)
}

func TestStart(t *testing.T) {
	c := Start(t)
	attachment := "From: a@example.test\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=b1\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nhello\r\n" +
		"--b1\r\nContent-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(EICAR)) + "\r\n--b1--\r\n"
	if strings.Contains(attachment, EICAR) {
		t.Fatal("the attachment case must hold EICAR only base64-encoded")
	}
	found := "stream: " + Signature + " FOUND\x00"
	for _, tc := range []struct {
		name, network, address, data, want string
	}{
		{"eicar unix", "unix", c.Socket(), EICAR, found},
		{"eicar tcp", "tcp", c.TCPAddr(), EICAR, found},
		{"eicar in a message body", "unix", c.Socket(), "Subject: test\r\n\r\n" + EICAR + "\r\n", found},
		{"eicar base64 attachment", "unix", c.Socket(), attachment, found},
		{"clean", "tcp", c.TCPAddr(), "Subject: test\r\n\r\nhello\r\n", "stream: OK\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := instream(t, tc.network, tc.address, tc.data); got != tc.want {
				t.Errorf("reply %q, want %q\nclamd log:\n%s", got, tc.want, c.Log())
			}
		})
	}
}

func TestStreamMaxLength(t *testing.T) {
	c := StartWith(t, Options{StreamMaxLength: 1000})
	got := instream(t, "unix", c.Socket(), strings.Repeat("x", 2000))
	if want := "INSTREAM size limit exceeded. ERROR\x00"; got != want {
		t.Errorf("reply %q, want %q", got, want)
	}
}

func TestStop(t *testing.T) {
	c := Start(t)
	c.Stop()
	c.Stop() // a second call (and the cleanup's) does nothing
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := ping(ctx, "unix", c.Socket()); err == nil {
		t.Error("clamd still answers after Stop")
	}
	if err := ping(ctx, "tcp", c.TCPAddr()); err == nil {
		t.Error("clamd still answers on TCP after Stop")
	}
}
