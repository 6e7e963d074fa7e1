package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// newMilter builds the stage from a JSON config and closes it at the end.
func newMilter(t *testing.T, config string) *Milter {
	t.Helper()
	f, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	m := f.(*Milter)
	m.log = slog.New(slog.NewTextHandler(t.Output(), nil)).With("milter", m.address)
	t.Cleanup(func() { m.Close() })
	return m
}

// testTx is the transaction every test replays: two recipients, a small
// header and a two-line body.
func testTx() *stages.Transaction {
	return &stages.Transaction{
		QueueID: "Q123",
		Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.7"), Port: 40123, Name: "client.example.org",
			Helo: "client.example.org", TLS: "TLS 1.3 with cipher TLS_AES_128_GCM_SHA256"},
		From:  "sender@example.org",
		Rcpts: []string{"a@example.test", "b@example.test"},
		Header: stages.Header{
			{Name: "From", Value: "Sender <sender@example.org>"},
			{Name: "To", Value: "a@example.test,\r\n b@example.test"},
			{Name: "Subject", Value: "hello"},
			{Name: "X-Remove", Value: "me"},
			{Name: "Message-ID", Value: "<1@example.org>"},
		},
		Body: stages.BytesBody("Hello\r\nworld\r\n"),
	}
}

// run runs the stage at the data phase with a deadline.
func run(t *testing.T, m *Milter, tx *stages.Transaction) stages.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := m.Run(ctx, stages.Data, tx)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	return v
}

// applied returns the message as it would be relayed after the verdict's
// edits: envelope and the whole message text.
func applied(t *testing.T, tx *stages.Transaction, v stages.Verdict) (*stages.Transaction, string) {
	t.Helper()
	out := *tx
	if err := stages.ApplyEdits(&out, v.Edits); err != nil {
		t.Fatalf("ApplyEdits(%+v): %v", v.Edits, err)
	}
	rc, err := out.Message()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		t.Fatal(err)
	}
	return &out, string(b)
}

// countingListener counts the connections a test milter accepts.
type countingListener struct {
	net.Listener
	n atomic.Int32
}

func (l *countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err == nil {
		l.n.Add(1)
	}
	return c, err
}

func listen(t *testing.T) *countingListener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return &countingListener{Listener: ln}
}

// serveGoMilter runs a go-milter server (protocol version 2) with the
// backend new makes per connection; it returns the stage's address.
func serveGoMilter(t *testing.T, actions gomilter.OptAction, protocol gomilter.OptProtocol, new func() gomilter.Milter) (string, *countingListener) {
	t.Helper()
	ln := listen(t)
	srv := &gomilter.Server{NewMilter: new, Actions: actions, Protocol: protocol}
	done := make(chan struct{})
	go func() {
		defer close(done)
		srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		<-done
	})
	return "inet:" + ln.Addr().String(), ln
}

// fakeMilter is a scripted milter speaking protocol version 6 with raw
// packets, for what go-milter's server cannot do: version 6 flags,
// SMFIC_QUIT_NC, progress, garbage.
type fakeMilter struct {
	ln      *countingListener
	addr    string
	actions uint32
	proto   uint32
	symlist []byte // appended to the option negotiation answer
	// answer, if set, may answer a command itself (and return true).
	answer func(w io.Writer, p packet) bool
	// eom writes the answer to the end of the message; default continue.
	eom func(w io.Writer)
	// dropKept closes the connection at SMFIC_QUIT_NC, as a milter that
	// restarts while the gateway keeps the connection idle.
	dropKept bool

	mu   sync.Mutex
	seen []packet // every packet received, in order
	wg   sync.WaitGroup
}

// startFake starts f on f.ln, or on 127.0.0.1:0 if nil, and stops it at
// the end of the test.
func startFake(t *testing.T, f *fakeMilter) *fakeMilter {
	t.Helper()
	if f.ln == nil {
		f.ln = listen(t)
	}
	f.addr = "inet:" + f.ln.Addr().String()
	var conns sync.Map
	f.wg.Add(1)
	go func() {
		defer f.wg.Done()
		for {
			c, err := f.ln.Accept()
			if err != nil {
				return
			}
			conns.Store(c, true)
			f.wg.Add(1)
			go func() {
				defer f.wg.Done()
				defer c.Close()
				f.serve(c)
			}()
		}
	}()
	t.Cleanup(func() {
		f.ln.Close()
		conns.Range(func(c, _ any) bool { c.(net.Conn).Close(); return true })
		f.wg.Wait()
	})
	return f
}

// noReplyFlag is the flag that spares the answer to a command.
var noReplyFlag = map[byte]gomilter.OptProtocol{
	'C': gomilter.OptNoConnReply, 'H': gomilter.OptNoHeloReply, 'M': gomilter.OptNoMailReply,
	'R': gomilter.OptNoRcptReply, 'T': gomilter.OptNoDataReply, 'L': gomilter.OptNoHeaderReply,
	'N': gomilter.OptNoEOHReply, 'B': gomilter.OptNoBodyReply,
}

func (f *fakeMilter) serve(c net.Conn) {
	r := bufio.NewReader(c)
	for {
		p, err := readPacket(r)
		if err != nil {
			return
		}
		f.mu.Lock()
		f.seen = append(f.seen, packet{p.code, bytes.Clone(p.data)})
		f.mu.Unlock()
		if f.answer != nil && f.answer(c, p) {
			continue
		}
		switch p.code {
		case 'O':
			var b [12]byte
			binary.BigEndian.PutUint32(b[0:], 6)
			binary.BigEndian.PutUint32(b[4:], f.actions)
			binary.BigEndian.PutUint32(b[8:], f.proto)
			writeRaw(c, 'O', append(b[:], f.symlist...))
		case 'D', 'A':
		case 'K':
			if f.dropKept {
				return
			}
		case 'Q':
			return
		case 'E':
			if f.eom != nil {
				f.eom(c)
			} else {
				writeRaw(c, 'c', nil)
			}
		default:
			if gomilter.OptProtocol(f.proto)&noReplyFlag[p.code] == 0 {
				writeRaw(c, 'c', nil)
			}
		}
	}
}

// packets returns the codes of the packets received, as a string.
func (f *fakeMilter) codes() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var b []byte
	for _, p := range f.seen {
		b = append(b, p.code)
	}
	return string(b)
}

// waitCodes waits until the packets received are want, for a packet the
// stage wrote before Run returned but the fake may not have read yet
// (SMFIC_QUIT_NC). The bound is for a loaded machine, not a measure.
func (f *fakeMilter) waitCodes(t *testing.T, want string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if f.codes() == want {
			return
		}
	}
	t.Errorf("packets %s; want %s", f.codes(), want)
}

// macrosFor returns the macros last sent for the command code.
func (f *fakeMilter) macrosFor(code byte) map[string]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	var m map[string]string
	for _, p := range f.seen {
		if p.code == 'D' && len(p.data) > 0 && p.data[0] == code {
			m = map[string]string{}
			kv := strings.Split(strings.TrimSuffix(string(p.data[1:]), "\x00"), "\x00")
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
		}
	}
	return m
}

func writeRaw(w io.Writer, code byte, data []byte) {
	b := binary.BigEndian.AppendUint32(nil, uint32(1+len(data)))
	b = append(b, code)
	w.Write(append(b, data...))
}
