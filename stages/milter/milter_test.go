package milter

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// recorder is a go-milter backend that records what it was told and, at
// the end of the message, calls eom.
type recorder struct {
	gomilter.NoOpMilter
	mu     *sync.Mutex
	got    *[]string // "step value" lines, in order
	eom    func(m *gomilter.Modifier) (gomilter.Response, error)
	onMail gomilter.Response
}

func (r recorder) note(format string, a ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	*r.got = append(*r.got, fmt.Sprintf(format, a...))
}

func (r recorder) Connect(host, family string, port uint16, addr net.IP, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("connect %s %s %d %s j=%s _=%s client_addr=%s", host, family, port, addr, m.Macros["j"], m.Macros["_"], m.Macros["{client_addr}"])
	return gomilter.RespContinue, nil
}

func (r recorder) Helo(name string, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("helo %s tls=%s cipher=%s", name, m.Macros["{tls_version}"], m.Macros["{cipher}"])
	return gomilter.RespContinue, nil
}

func (r recorder) MailFrom(from string, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("mail %s i=%s mail_addr=%s", from, m.Macros["i"], m.Macros["{mail_addr}"])
	if r.onMail != nil {
		return r.onMail, nil
	}
	return gomilter.RespContinue, nil
}

func (r recorder) RcptTo(rcpt string, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("rcpt %s rcpt_addr=%s", rcpt, m.Macros["{rcpt_addr}"])
	return gomilter.RespContinue, nil
}

func (r recorder) Header(name, value string, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("header %s: %q", name, value)
	return gomilter.RespContinue, nil
}

func (r recorder) Headers(h textproto.MIMEHeader, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("eoh")
	return gomilter.RespContinue, nil
}

func (r recorder) BodyChunk(chunk []byte, m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("body %q", chunk)
	return gomilter.RespContinue, nil
}

func (r recorder) Body(m *gomilter.Modifier) (gomilter.Response, error) {
	r.note("eom i=%s", m.Macros["i"])
	if r.eom == nil {
		return gomilter.RespContinue, nil
	}
	return r.eom(m)
}

const allActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt | gomilter.OptRemoveRcpt |
	gomilter.OptChangeHeader | gomilter.OptQuarantine | gomilter.OptChangeFrom

// serveRecorder serves a recorder whose end of message is eom.
func serveRecorder(t *testing.T, eom func(m *gomilter.Modifier) (gomilter.Response, error)) (string, func() []string) {
	var mu sync.Mutex
	var got []string
	addr, _ := serveGoMilter(t, allActions, 0, func() gomilter.Milter {
		return recorder{mu: &mu, got: &got, eom: eom}
	})
	return addr, func() []string {
		mu.Lock()
		defer mu.Unlock()
		return slices.Clone(got)
	}
}

// TestEdits: every modification a milter can make shows up in the verdict
// and, applied as the pipeline applies edits, in the relayed message. It
// also checks what the milter was told, macros included.
func TestEdits(t *testing.T) {
	addr, got := serveRecorder(t, func(m *gomilter.Modifier) (gomilter.Response, error) {
		m.AddHeader("X-Added", "yes\n\tfolded")
		m.InsertHeader(0, "X-Top", "1")
		m.ChangeHeader(1, "Subject", "changed")
		m.ChangeHeader(1, "X-Remove", "")
		m.AddRecipient("c@example.test")
		m.DeleteRecipient("b@example.test")
		m.ChangeFrom("<new@example.org>")
		m.ReplaceBody([]byte("new body\n"))
		return gomilter.RespContinue, nil
	})
	m := newMilter(t, `{"address": "`+addr+`"}`)
	tx := testTx()
	v := run(t, m, tx)

	wantEdits := []stages.Edit{
		{Op: stages.HeaderAdd, Name: "X-Added", Value: "yes\r\n\tfolded"},
		{Op: stages.HeaderInsert, Name: "X-Top", Value: "1", Index: 0},
		{Op: stages.HeaderChange, Name: "Subject", Value: "changed", Index: 1},
		{Op: stages.HeaderDelete, Name: "X-Remove", Index: 1},
		{Op: stages.RcptAdd, Value: "c@example.test"},
		{Op: stages.RcptDelete, Value: "b@example.test"},
		{Op: stages.SenderChange, Value: "new@example.org"},
		{Op: stages.BodyReplace, Body: []byte("new body\r\n")},
	}
	if v.Action != stages.Continue || v.Result != "continue" || fmt.Sprint(v.Edits) != fmt.Sprint(wantEdits) {
		t.Errorf("verdict %+v\nwant edits %+v", v, wantEdits)
	}
	out, msg := applied(t, tx, v)
	wantMsg := "X-Top: 1\r\nFrom: Sender <sender@example.org>\r\nTo: a@example.test,\r\n b@example.test\r\n" +
		"Subject: changed\r\nMessage-ID: <1@example.org>\r\nX-Added: yes\r\n\tfolded\r\n\r\nnew body\r\n"
	if msg != wantMsg {
		t.Errorf("message:\n%q\nwant\n%q", msg, wantMsg)
	}
	if out.From != "new@example.org" || !slices.Equal(out.Rcpts, []string{"a@example.test", "c@example.test"}) {
		t.Errorf("envelope %q %q", out.From, out.Rcpts)
	}

	want := []string{
		"connect client.example.org tcp4 40123 192.0.2.7 j=mx.example.test _=client.example.org [192.0.2.7] client_addr=192.0.2.7",
		"helo client.example.org tls=TLSv1.3 cipher=TLS_AES_128_GCM_SHA256",
		"mail sender@example.org i=Q123 mail_addr=sender@example.org",
		"rcpt a@example.test rcpt_addr=a@example.test",
		"rcpt b@example.test rcpt_addr=b@example.test",
		`header From: "Sender <sender@example.org>"`,
		`header To: "a@example.test,\n b@example.test"`,
		`header Subject: "hello"`,
		`header X-Remove: "me"`,
		`header Message-ID: "<1@example.org>"`,
		"eoh",
		`body "Hello\r\nworld\r\n"`,
		"eom i=Q123",
	}
	if g := got(); !slices.Equal(g, want) {
		t.Errorf("milter was told\n%s\nwant\n%s", strings.Join(g, "\n"), strings.Join(want, "\n"))
	}
}

// TestReplies: each kind of reply maps to its verdict.
func TestReplies(t *testing.T) {
	tests := []struct {
		name   string
		eom    func(m *gomilter.Modifier) (gomilter.Response, error)
		action stages.Action
		result string
		reply  string // Reply.String(), "" for none
		reason string // part of Reason
		rcpts  []string
	}{
		{name: "accept", eom: resp(gomilter.RespAccept), action: stages.Continue, result: "accept",
			rcpts: []string{"a@example.test", "b@example.test"}},
		{name: "reject", eom: resp(gomilter.RespReject), action: stages.Reject, result: "reject", reason: "reject at end of message"},
		{name: "tempfail", eom: resp(gomilter.RespTempFail), action: stages.TempFail, result: "tempfail"},
		{name: "reply 5xx", eom: resp(gomilter.NewResponseStr('y', "550 5.7.1 Message refused by policy")),
			action: stages.Reject, result: "reject", reply: "550 5.7.1 Message refused by policy"},
		{name: "reply 4xx", eom: resp(gomilter.NewResponseStr('y', "451 4.7.1 Greylisted, try later")),
			action: stages.TempFail, result: "tempfail", reply: "451 4.7.1 Greylisted, try later"},
		{name: "reply multiline", eom: resp(gomilter.NewResponseStr('y', "554-5.7.1 first\r\n554 5.7.1 second")),
			action: stages.Reject, result: "reject", reply: "554 5.7.1 first second"},
		{name: "discard", eom: resp(gomilter.RespDiscard), action: stages.Continue, result: "discard", rcpts: []string{}},
		{name: "quarantine", eom: func(m *gomilter.Modifier) (gomilter.Response, error) {
			m.Quarantine("Eicar-Signature FOUND")
			return gomilter.RespContinue, nil
		}, action: stages.Quarantine, result: "quarantine", reason: "Eicar-Signature FOUND",
			rcpts: []string{"a@example.test", "b@example.test"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, _ := serveRecorder(t, tt.eom)
			m := newMilter(t, `{"address": "`+addr+`"}`)
			tx := testTx()
			v := run(t, m, tx)
			reply := ""
			if v.Reply != nil {
				reply = v.Reply.String()
			}
			if v.Action != tt.action || v.Result != tt.result || reply != tt.reply || !strings.Contains(v.Reason, tt.reason) {
				t.Errorf("verdict %+v; want %s %s %q reason ~%q", v, tt.action, tt.result, tt.reply, tt.reason)
			}
			if tt.rcpts != nil {
				out, _ := applied(t, tx, v)
				if !slices.Equal(out.Rcpts, tt.rcpts) && !(len(tt.rcpts) == 0 && len(out.Rcpts) == 0) {
					t.Errorf("recipients after edits %q; want %q", out.Rcpts, tt.rcpts)
				}
			}
		})
	}
}

func resp(r gomilter.Response) func(*gomilter.Modifier) (gomilter.Response, error) {
	return func(*gomilter.Modifier) (gomilter.Response, error) { return r, nil }
}

// TestEarlyReply: a reply before the end of the message ends the
// conversation there.
func TestEarlyReply(t *testing.T) {
	var mu sync.Mutex
	var got []string
	addr, _ := serveGoMilter(t, allActions, 0, func() gomilter.Milter {
		return recorder{mu: &mu, got: &got, onMail: gomilter.NewResponseStr('y', "550 5.7.1 Sender blocked")}
	})
	m := newMilter(t, `{"address": "`+addr+`"}`)
	v := run(t, m, testTx())
	if v.Action != stages.Reject || v.Reply == nil || v.Reply.String() != "550 5.7.1 Sender blocked" || !strings.Contains(v.Reason, "at mail") {
		t.Errorf("verdict %+v", v)
	}
	mu.Lock()
	defer mu.Unlock()
	if last := got[len(got)-1]; !strings.HasPrefix(last, "mail ") {
		t.Errorf("milter was told more than up to MAIL: %q", got)
	}
}

// TestProtocolV6 talks to a version 6 milter that skips steps, wants no
// replies for some, names its macros and answers with progress: what it
// asked to skip never reaches it, and progress keeps a short timeout
// alive.
func TestProtocolV6(t *testing.T) {
	symlist := binary.BigEndian.AppendUint32(nil, uint32(gomilter.StageConnect))
	symlist = append(symlist, "{client_addr} {daemon_name}\x00"...)
	f := startFake(t, &fakeMilter{
		actions: uint32(gomilter.OptAddHeader | gomilter.OptSetSymList),
		proto: uint32(gomilter.OptNoHelo | gomilter.OptNoBody | gomilter.OptNoHeaderReply |
			gomilter.OptNoRcptReply | gomilter.OptNoData),
		symlist: symlist,
		eom: func(w io.Writer) {
			// Past the content_timeout of 1s in all, by the clock,
			// with progress far more often than the timeout.
			for start := time.Now(); time.Since(start) < 1500*time.Millisecond; {
				time.Sleep(50 * time.Millisecond)
				writeRaw(w, respProgress, nil)
			}
			writeRaw(w, 'h', []byte("X-Checked\x00yes\x00"))
			writeRaw(w, 'c', nil)
		},
	})
	m := newMilter(t, `{"address": "`+f.addr+`", "content_timeout": "1s"}`)
	v := run(t, m, testTx())
	if v.Action != stages.Continue || len(v.Edits) != 1 || v.Edits[0].Name != "X-Checked" {
		t.Fatalf("verdict %+v", v)
	}
	// O: negotiate; D+C connect; D+M mail; D+R per recipient (no reply);
	// L per header (no reply); D+N end of header; D+E end of message;
	// K: the connection is kept for the next transaction.
	f.waitCodes(t, "ODCDMDRDRLLLLLDNDEK")
	if got := f.macrosFor('C'); len(got) != 2 || got["{client_addr}"] != "192.0.2.7" || got["{daemon_name}"] != "mx.example.test" {
		t.Errorf("connect macros %v; want only the two asked for", got)
	}
}

// TestReuse: a version 6 milter's connection is kept for the next
// transactions: for any client after a message that ended with continue
// (SMFIC_QUIT_NC), and for the same SMTP client's next message otherwise.
// A kept connection the milter closed meanwhile is replaced without a
// failure.
func TestReuse(t *testing.T) {
	const n = 5
	otherClient := func(i int) *stages.Transaction {
		tx := testTx()
		tx.Client.Port = uint16(50000 + i)
		return tx
	}
	sameClient := func(int) *stages.Transaction { return testTx() }
	accept := func(w io.Writer) { writeRaw(w, 'a', nil) }
	tests := []struct {
		name  string
		eom   func(w io.Writer)
		tx    func(i int) *stages.Transaction
		conns int32
		first string // the codes of the first transaction
		codes string // of the second transaction
	}{
		{"continue, other clients", nil, otherClient, 1, "ODCDHDMDRDRDTLLLLLDNBDEK", "DCDHDMDRDRDTLLLLLDNBDEK"},
		{"accept, same client", accept, sameClient, 1, "ODCDHDMDRDRDTLLLLLDNBDE", "DMDRDRDTLLLLLDNBDE"},
		{"accept, other clients", accept, otherClient, n, "ODCDHDMDRDRDTLLLLLDNBDE", "ODCDHDMDRDRDTLLLLLDNBDE"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := startFake(t, &fakeMilter{eom: tt.eom})
			m := newMilter(t, `{"address": "`+f.addr+`"}`)
			for i := range n {
				if v := run(t, m, tt.tx(i)); v.Action != stages.Continue {
					t.Fatalf("verdict %+v", v)
				}
				// A SMFIC_QUIT_NC may still be on its way to the fake.
				switch i {
				case 0:
					f.waitCodes(t, tt.first)
				case 1:
					f.waitCodes(t, tt.first+tt.codes)
				}
			}
			if got := f.ln.n.Load(); got != tt.conns {
				t.Errorf("%d transactions used %d connections; want %d", n, got, tt.conns)
			}
		})
	}

	t.Run("concurrent", func(t *testing.T) {
		f := startFake(t, &fakeMilter{})
		m := newMilter(t, `{"address": "`+f.addr+`"}`)
		for round := range 3 {
			var wg sync.WaitGroup
			for i := range 4 {
				wg.Go(func() {
					ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
					defer cancel()
					if v, err := m.Run(ctx, stages.Data, otherClient(round*4+i)); err != nil || v.Result != "continue" {
						t.Errorf("concurrent run: %+v %v", v, err)
					}
				})
			}
			wg.Wait()
		}
		if got := f.ln.n.Load(); got > 4 {
			t.Errorf("3 rounds of 4 concurrent transactions used %d connections; want at most 4", got)
		}
	})

	t.Run("closed while kept", func(t *testing.T) {
		// A milter that closes kept connections (a restart, an idle
		// timeout): each transaction finds its kept connection dead, and
		// reconnects without a failure.
		f := startFake(t, &fakeMilter{dropKept: true})
		m := newMilter(t, `{"address": "`+f.addr+`"}`)
		for i := range 3 {
			if v := run(t, m, otherClient(i)); v.Result != "continue" {
				t.Errorf("transaction %d after the milter closed the kept connection: %+v", i, v)
			}
		}
		if got := f.ln.n.Load(); got != 3 {
			t.Errorf("%d connections; want 3", got)
		}
	})
}

// TestBroken: a milter that is down, too slow, closes mid-conversation or
// sends garbage gets default_action and a verdict, never an error.
func TestBroken(t *testing.T) {
	closed := listen(t)
	downAddr := "inet:" + closed.Addr().String()
	closed.Close()

	tests := []struct {
		name   string
		answer func(w io.Writer, p packet) bool // nil: the milter is down
		config string
		reason string
	}{
		{name: "down", reason: "connect"},
		{name: "closes mid-conversation", answer: func(w io.Writer, p packet) bool {
			if p.code == 'L' {
				w.(net.Conn).Close()
				return true
			}
			return false
		}, reason: "header From: milter closed the connection"},
		{name: "oversize packet", answer: func(w io.Writer, p packet) bool {
			if p.code == 'M' {
				w.Write([]byte{0xff, 0xff, 0xff, 0xff, 'c'})
				return true
			}
			return false
		}, reason: "mail: malformed packet: length 4294967295"},
		{name: "zero length packet", answer: func(w io.Writer, p packet) bool {
			if p.code == 'C' {
				w.Write([]byte{0, 0, 0, 0})
				return true
			}
			return false
		}, reason: "connect: malformed packet: length 0"},
		{name: "unknown reply", answer: func(w io.Writer, p packet) bool {
			if p.code == 'R' {
				writeRaw(w, 'Z', []byte("junk"))
				return true
			}
			return false
		}, reason: `unexpected packet 'Z' in answer to packet 'R'`},
		{name: "garbled header edit", answer: func(w io.Writer, p packet) bool {
			if p.code == 'E' {
				writeRaw(w, 'h', []byte("X-No-Terminator"))
				writeRaw(w, 'c', nil)
				return true
			}
			return false
		}, reason: "missing NUL terminator"},
		{name: "header injection", answer: func(w io.Writer, p packet) bool {
			if p.code == 'E' {
				writeRaw(w, 'h', []byte("X-A\x00v\nBcc: evil@example.net\x00"))
				writeRaw(w, 'c', nil)
				return true
			}
			return false
		}, reason: "line break that is not a fold"},
		{name: "bad reply code", answer: func(w io.Writer, p packet) bool {
			if p.code == 'E' {
				writeRaw(w, 'y', []byte("250 ok\x00"))
				return true
			}
			return false
		}, reason: "expect 4xx or 5xx"},
		{name: "too slow", answer: func(w io.Writer, p packet) bool {
			if p.code == 'E' {
				// No answer until the stage gives up and closes the
				// connection, however loaded the machine.
				w.(net.Conn).Read(make([]byte, 1))
				return true
			}
			return false
		}, config: `, "content_timeout": "200ms"`, reason: "i/o timeout"},
	}
	for _, tt := range tests {
		for _, da := range []struct {
			name   string
			action stages.Action
		}{{"tempfail", stages.TempFail}, {"skip", stages.Continue}, {"quarantine", stages.Quarantine}} {
			t.Run(tt.name+"/"+da.name, func(t *testing.T) {
				addr := downAddr
				if tt.answer != nil {
					addr = startFake(t, &fakeMilter{answer: tt.answer}).addr
				}
				m := newMilter(t, `{"address": "`+addr+`", "default_action": "`+da.name+`"`+tt.config+`}`)
				v := run(t, m, testTx())
				// None of these waits for the stage's own deadline: "too
				// slow" is cut by content_timeout.
				if v.Action != da.action || v.Result != "unavailable" || len(v.Edits) != 0 ||
					!strings.Contains(v.Reason, tt.reason) || !strings.Contains(v.Reason, "default_action "+da.name) ||
					strings.Contains(v.Reason, "stage's timeout") {
					t.Errorf("verdict %+v; want %s with reason ~%q", v, da.action, tt.reason)
				}
			})
		}
	}
}

// TestStageDeadline: a milter slower than the stage's own timeout still
// gets default_action, just before the pipeline would give up. The milter
// never answers; the stage's timeout is long enough for a loaded machine
// to get to the end of the message.
func TestStageDeadline(t *testing.T) {
	f := startFake(t, &fakeMilter{eom: func(w io.Writer) {
		w.(net.Conn).Read(make([]byte, 1)) // until the stage closes the connection
	}})
	m := newMilter(t, `{"address": "`+f.addr+`", "default_action": "skip"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	v, err := m.Run(ctx, stages.Data, testTx())
	if err != nil || v.Result != "unavailable" || !strings.Contains(v.Reason, "stage's timeout") {
		t.Errorf("verdict %+v, %v", v, err)
	}
}

// TestCircuit: a milter that is down opens the circuit, so messages stop
// waiting for it; once it is back, the next probe closes the circuit and
// filtering resumes.
func TestCircuit(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	ln.Close()
	m := newMilter(t, `{"address": "inet:`+addr+`", "default_action": "tempfail"}`)
	// Long enough that the call right after the failures finds the
	// circuit still open on a loaded machine.
	m.circuit.retry = 2 * time.Second

	for i := range circuitThreshold {
		v := run(t, m, testTx())
		if v.Action != stages.TempFail || !strings.Contains(v.Reason, "connect") {
			t.Fatalf("failure %d: %+v", i, v)
		}
	}
	v := run(t, m, testTx())
	if v.Action != stages.TempFail || !strings.Contains(v.Reason, "circuit open") {
		t.Fatalf("with the circuit open: %+v", v)
	}

	// The milter comes back on the same address.
	ln2, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("listen on %s again: %v", addr, err)
	}
	startFake(t, &fakeMilter{ln: &countingListener{Listener: ln2}})

	deadline := time.Now().Add(30 * time.Second)
	for {
		v = run(t, m, testTx())
		if v.Result == "continue" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("filtering did not resume: %+v", v)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if v := run(t, m, testTx()); v.Result != "continue" {
		t.Errorf("after the circuit closed: %+v", v)
	}
}
