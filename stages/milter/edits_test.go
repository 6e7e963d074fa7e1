package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

func TestParseReply(t *testing.T) {
	tests := []struct {
		in   string
		want string // Reply.String(), or "error"
	}{
		{"550 5.7.1 Go away\x00", "550 5.7.1 Go away"},
		{"451 Try later\x00", "451 4.0.0 Try later"},
		{"554-5.7.1 one\r\n554 5.7.1 two\x00", "554 5.7.1 one two"},
		{"550 4.7.1 class mismatch\x00", "550 5.0.0 4.7.1 class mismatch"},
		{"550 5.7.1 caf\xc3\xa9\tbar\x00", "550 5.7.1 caf? bar"},
		{"550\x00", "550 5.0.0 "},
		{"250 ok\x00", "error"},
		{"600 no\x00", "error"},
		{"5x0 no\x00", "error"},
		{"47\x00", "error"},
		{"550-5.7.1 one\r\n450 4.7.1 two\x00", "error"},
	}
	for _, tt := range tests {
		r, err := parseReply([]byte(tt.in))
		got := "error"
		if err == nil {
			got = r.String()
		}
		if got != tt.want {
			t.Errorf("parseReply(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

func TestConvert(t *testing.T) {
	idx := func(i uint32, rest string) string { return string(binary.BigEndian.AppendUint32(nil, i)) + rest }
	tests := []struct {
		code byte
		data string
		want string // fmt of the edit, or "error"
	}{
		{'h', "X-A\x00v\x00", "{header_add X-A v 0 []}"},
		{'h', "X-A\x00 a\r\n\tb \n\x00", "{header_add X-A a\r\n\tb 0 []}"},
		{'h', "X-A\x00\x00", "{header_add X-A  0 []}"},
		{'h', "X-A\x00v\nBcc: x\x00", "error"},
		{'h', "X-A\x00v\n \n c\x00", "error"},
		{'h', "X-A\x00v\x01\x00", "error"},
		{'h', "X A\x00v\x00", "error"},
		{'h', "\x00v\x00", "error"},
		{'h', "X-A\x00v", "error"},
		{'h', "X-A\x00" + strings.Repeat("x", 1000) + "\x00", "error"},
		{'h', "X-A\x00" + strings.Repeat("word ", 400) + "\x00", "{header_add X-A " + strings.TrimSpace(strings.Repeat("word ", 400)) + " 0 []}"},
		{'i', idx(0, "X-A\x00v\x00"), "{header_insert X-A v 0 []}"},
		{'i', idx(3, "X-A\x00v\x00"), "{header_insert X-A v 3 []}"},
		{'i', "X\x00", "error"},
		{'m', idx(2, "Subject\x00new\x00"), "{header_change Subject new 2 []}"},
		{'m', idx(0, "Subject\x00new\x00"), "{header_change Subject new 1 []}"},
		{'m', idx(2, "Subject\x00\x00"), "{header_delete Subject  2 []}"},
		{'m', idx(0xffffffff, "Subject\x00x\x00"), "{header_change Subject x 2147483647 []}"},
		{'+', "<a@example.test>\x00", "{rcpt_add  a@example.test 0 []}"},
		{'+', "<>\x00", "error"},
		{'+', "<a@example.test> NOTIFY=NEVER\x00", "error"},
		{'2', "<a@example.test>\x00NOTIFY=NEVER\x00", "{rcpt_add  a@example.test 0 []}"},
		{'-', "<b@example.test>\x00", "{rcpt_delete  b@example.test 0 []}"},
		{'-', "<b@ex\rample.test>\x00", "error"},
		{'e', "<new@example.org>\x00SIZE=10\x00", "{sender_change  new@example.org 0 []}"},
		{'e', "<>\x00", "{sender_change   0 []}"},
		{'e', "<a<b>\x00", "error"},
	}
	for _, tt := range tests {
		var m mods
		ok, err := m.add(packet{tt.code, []byte(tt.data)})
		got := "error"
		if err == nil && len(m.edits) == 1 {
			e := m.edits[0]
			got = "{" + e.Op.String() + " " + e.Name + " " + e.Value + " " + strconv.Itoa(e.Index) + " []}"
		}
		if !ok || got != tt.want {
			t.Errorf("%q %q: %q, %v; want %q", tt.code, tt.data, got, err, tt.want)
		}
	}
}

func TestModsBody(t *testing.T) {
	var m mods
	for _, chunk := range []string{"line one\n", "line two\r\nlast"} {
		if ok, err := m.add(packet{'b', []byte(chunk)}); !ok || err != nil {
			t.Fatal(ok, err)
		}
	}
	edits := m.all()
	if len(edits) != 1 || edits[0].Op != stages.BodyReplace || string(edits[0].Body) != "line one\r\nline two\r\nlast" {
		t.Errorf("edits %+v", edits)
	}
	// The bound on what a milter may send.
	big := make([]byte, maxPacket)
	var err error
	for range maxModBytes/maxPacket + 1 {
		if _, err = m.add(packet{'b', big}); err != nil {
			break
		}
	}
	if err == nil {
		t.Error("no error past maxModBytes")
	}
}

func TestReadPacket(t *testing.T) {
	tests := []struct {
		in   []byte
		want string
	}{
		{[]byte{0, 0, 0, 1, 'c'}, ""},
		{[]byte{0, 0, 0, 0}, "length 0"},
		{[]byte{0x7f, 0, 0, 0}, "length 2130706432"},
		{[]byte{0, 0, 0, 5, 'h', 'a'}, "closed the connection in a packet of 5 bytes"},
		{[]byte{0, 0}, "read: unexpected EOF"},
		{nil, "milter closed the connection"},
	}
	for _, tt := range tests {
		_, err := readPacket(bytes.NewReader(tt.in))
		if (tt.want == "" && err != nil) || (tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want))) {
			t.Errorf("readPacket(%v) = %v; want ~%q", tt.in, err, tt.want)
		}
	}
}

func TestParseOptions(t *testing.T) {
	opt := func(v, a, p uint32, rest string) []byte {
		b := binary.BigEndian.AppendUint32(nil, v)
		b = binary.BigEndian.AppendUint32(b, a)
		b = binary.BigEndian.AppendUint32(b, p)
		return append(b, rest...)
	}
	var s session
	// A version 2 milter asking for version 6 flags gets version 2's.
	if err := s.parseOptions(opt(2, 0xffffffff, 0xffffffff, "")); err != nil || s.version != 2 || s.proto != 0x7f || s.actions != offerActions {
		t.Errorf("v2: %v %d %x %x", err, s.version, s.proto, s.actions)
	}
	if err := s.parseOptions(opt(6, 0, 0, "\x00\x00\x00\x02{mail_addr} i\x00\x00\x00\x00\x09x\x00")); err != nil ||
		strings.Join(s.symlist[2], ",") != "{mail_addr},i" || len(s.symlist) != 1 {
		t.Errorf("symlist: %v %v", err, s.symlist)
	}
	for _, bad := range [][]byte{opt(1, 0, 0, ""), opt(7, 0, 0, ""), opt(6, 0, 0, "\x00\x00"), opt(6, 0, 0, "\x00\x00\x00\x01i"), {0, 0, 0, 6}} {
		if err := s.parseOptions(bad); err == nil {
			t.Errorf("parseOptions(%q) accepted", bad)
		}
	}
}

// FuzzEndOfMessage feeds arbitrary bytes as a milter's answer to the end
// of a message: the stage never panics, and whatever it makes of them
// either is an error (default_action) or edits the pipeline accepts.
func FuzzEndOfMessage(f *testing.F) {
	pk := func(code byte, data string) []byte {
		b := binary.BigEndian.AppendUint32(nil, uint32(1+len(data)))
		return append(append(b, code), data...)
	}
	f.Add(append(pk('h', "X-A\x00v\n\tw\x00"), pk('c', "")...))
	f.Add(append(pk('m', "\x00\x00\x00\x01Subject\x00\x00"), pk('y', "550 5.7.1 no\x00")...))
	f.Add(append(append(pk('b', "body\n"), pk('q', "why\x00")...), pk('a', "")...))
	f.Add(append(append(pk('+', "<a@b>\x00"), pk('e', "<c@d>\x00x\x00")...), pk('p', "")...))
	f.Add(append(pk('i', "\x00\x00\x00\x05X\x00\x00"), pk('d', "")...))
	f.Fuzz(func(t *testing.T, stream []byte) {
		r := bytes.NewReader(stream)
		var m mods
		for {
			p, err := readPacket(r)
			if err != nil {
				break
			}
			ok, err := m.add(p)
			if err != nil {
				return
			}
			if !ok && p.code == 'y' {
				if _, err := parseReply(p.data); err != nil {
					return
				}
			}
		}
		tx := testTx()
		if err := stages.ApplyEdits(tx, m.all()); err != nil {
			t.Fatalf("edits %+v refused by the pipeline: %v", m.all(), err)
		}
		if _, err := tx.Message(); err != nil && !errors.Is(err, io.EOF) {
			t.Fatal(err)
		}
	})
}

// FuzzOptions feeds arbitrary option negotiation answers: a version is
// 2 to 6, flags are never more than offered, and nothing panics.
func FuzzOptions(f *testing.F) {
	f.Add([]byte("\x00\x00\x00\x06\x00\x00\x01\xff\x00\x1f\xff\xff\x00\x00\x00\x02{mail_addr} i\x00"))
	f.Add([]byte("\x00\x00\x00\x02\xff\xff\xff\xff\xff\xff\xff\xff"))
	f.Fuzz(func(t *testing.T, data []byte) {
		var s session
		if err := s.parseOptions(data); err != nil {
			return
		}
		if s.version < 2 || s.version > protocolVersion || s.actions&^offerActions != 0 || s.proto&^offerProtocol != 0 {
			t.Fatalf("accepted %d %x %x", s.version, s.actions, s.proto)
		}
	})
}
