package milter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// maxModBytes bounds what the milter may send at the end of a message
// (header edits and the replacement body together), so that a broken
// milter cannot make the stage hold unbounded memory.
const maxModBytes = 64 << 20

// mods collects the modification packets a milter sends before its final
// reply to SMFIC_BODYEOB, converted to edits in the order they came.
type mods struct {
	edits      []stages.Edit
	body       []byte // SMFIR_REPLBODY chunks, concatenated
	replaced   bool
	quarantine *string // SMFIR_QUARANTINE reason; nil if none
	size       int
}

// add converts one modification packet. It reports false for a code that
// is not a modification; an error means a malformed packet.
func (m *mods) add(p packet) (bool, error) {
	switch gomilter.ModifyActCode(p.code) {
	case gomilter.ActAddHeader, gomilter.ActInsertHeader, gomilter.ActChangeHeader,
		gomilter.ActAddRcpt, gomilter.ActDelRcpt, modAddRcptPar, gomilter.ActChangeFrom,
		gomilter.ActReplBody, gomilter.ActQuarantine:
	default:
		return false, nil
	}
	if m.size += len(p.data); m.size > maxModBytes {
		return true, fmt.Errorf("modifications exceed %d bytes", maxModBytes)
	}
	switch gomilter.ModifyActCode(p.code) {
	case gomilter.ActReplBody:
		// The replacement arrives in chunks (smfi_replacebody may be
		// called repeatedly); together they are the new body.
		m.body = append(m.body, p.data...)
		m.replaced = true
		return true, nil
	case gomilter.ActQuarantine:
		reason, _, err := cstring(p.data)
		if err != nil {
			return true, fmt.Errorf("quarantine: %w", err)
		}
		reason = oneLine(reason)
		m.quarantine = &reason
		return true, nil
	}
	e, err := convert(p)
	if err != nil {
		return true, err
	}
	m.edits = append(m.edits, e)
	return true, nil
}

// all returns the edits, the replacement body last: the body is one edit
// however many chunks it came in.
func (m *mods) all() []stages.Edit {
	if !m.replaced {
		return m.edits
	}
	return append(m.edits, stages.Edit{Op: stages.BodyReplace, Body: stages.CRLF(m.body)})
}

// convert turns one header, recipient or sender modification into an edit.
func convert(p packet) (stages.Edit, error) {
	code := gomilter.ModifyActCode(p.code)
	data := p.data
	switch code {
	case gomilter.ActAddRcpt, gomilter.ActDelRcpt, modAddRcptPar, gomilter.ActChangeFrom:
		// SMFIR_ADDRCPT_PAR and SMFIR_CHGFROM may carry ESMTP arguments
		// after the address; the gateway keeps none, as Postfix ignores
		// them too.
		a, _, err := cstring(data)
		if err != nil {
			return stages.Edit{}, fmt.Errorf("%s: %w", describe(p.code), err)
		}
		addr, err := stages.EnvelopeAddress(a)
		if err != nil {
			return stages.Edit{}, fmt.Errorf("%s: %w", describe(p.code), err)
		}
		switch code {
		case gomilter.ActDelRcpt:
			return stages.Edit{Op: stages.RcptDelete, Value: addr}, nil
		case gomilter.ActChangeFrom:
			return stages.Edit{Op: stages.SenderChange, Value: addr}, nil
		}
		if addr == "" {
			return stages.Edit{}, fmt.Errorf("%s: empty recipient", describe(p.code))
		}
		return stages.Edit{Op: stages.RcptAdd, Value: addr}, nil
	}

	// Header edits: SMFIR_CHGHEADER and SMFIR_INSHEADER start with a
	// 4-byte index, then name and value as C strings.
	index := 0
	if code != gomilter.ActAddHeader {
		if len(data) < 4 {
			return stages.Edit{}, fmt.Errorf("%s: missing header index", describe(p.code))
		}
		// The index is unsigned on the wire; a value beyond int32 is
		// clamped, meaning "past the end" either way.
		index = int(min(binary.BigEndian.Uint32(data), 1<<31-1))
		data = data[4:]
	}
	name, rest, err := cstring(data)
	if err == nil {
		var value string
		if value, _, err = cstring(rest); err == nil {
			return headerEdit(code, index, name, value)
		}
	}
	return stages.Edit{}, fmt.Errorf("%s: %w", describe(p.code), err)
}

func headerEdit(code gomilter.ModifyActCode, index int, name, value string) (stages.Edit, error) {
	v := crlfFolds(value)
	if _, err := stages.NewField(name, v); err != nil {
		return stages.Edit{}, fmt.Errorf("header %s: %w", name, err)
	}
	switch code {
	case gomilter.ActAddHeader:
		return stages.Edit{Op: stages.HeaderAdd, Name: name, Value: v}, nil
	case gomilter.ActInsertHeader:
		// smfi_insheader: index 0 is the top of the header.
		return stages.Edit{Op: stages.HeaderInsert, Name: name, Value: v, Index: index}, nil
	}
	// smfi_chgheader: the index-th (1-based) field called name; an empty
	// value deletes it. Index 0 means the first, as in sendmail.
	index = max(index, 1)
	if v == "" {
		return stages.Edit{Op: stages.HeaderDelete, Name: name, Index: index}, nil
	}
	return stages.Edit{Op: stages.HeaderChange, Name: name, Value: v, Index: index}, nil
}

// crlfFolds turns a header value as milters send it into the gateway's
// form, which stages.NewField then checks. libmilter milters fold with a
// bare LF ("\n\t"), the line end of sendmail's and Postfix's queue files;
// the gateway keeps CRLF on the wire and refuses a bare LF, so every line
// break becomes CRLF. Whether each is a fold (RFC 5322 §2.2.3), and not
// the end of the field, is for stages.NewField to say.
func crlfFolds(v string) string {
	v = strings.TrimRight(strings.ReplaceAll(v, "\r\n", "\n"), " \t\n")
	return strings.Trim(strings.ReplaceAll(v, "\n", "\r\n"), " \t")
}

// cstring splits a NUL-terminated string off the front of b.
func cstring(b []byte) (string, []byte, error) {
	i := bytes.IndexByte(b, 0)
	if i < 0 {
		return "", nil, errors.New("missing NUL terminator")
	}
	return string(b[:i]), b[i+1:], nil
}

// maxReplyText bounds the reply text passed on from the milter: one SMTP
// reply line is at most 512 octets (RFC 5321 §4.5.3.1.5).
const maxReplyText = 400

// parseReply reads the data of SMFIR_REPLYCODE: "550 5.7.1 text", or
// several lines "550-5.7.1 one\r\n550 5.7.1 two" from smfi_setmlreply.
// The code must be 4xx or 5xx (libmilter refuses others); the lines'
// texts are joined into one.
func parseReply(data []byte) (*stages.Reply, error) {
	s, _, err := cstring(data)
	if err != nil {
		s = string(data) // a missing terminator is harmless here
	}
	s = strings.TrimRight(s, "\r\n")
	if len(s) < 3 {
		return nil, fmt.Errorf("reply code %q too short", s)
	}
	code, err := strconv.Atoi(s[:3])
	if err != nil || code < 400 || code > 599 || s[1] > '5' {
		return nil, fmt.Errorf("reply code %q; expect 4xx or 5xx", s[:3])
	}
	r := &stages.Reply{Code: code}
	var texts []string
	for line := range strings.SplitSeq(s, "\n") {
		line = strings.TrimRight(line, "\r")
		if len(line) < 3 || line[:3] != s[:3] {
			return nil, fmt.Errorf("reply line %q does not start with %d", line, code)
		}
		text := strings.TrimLeft(line[3:], " -")
		if enh, rest, ok := enhanced(text, code/100); ok {
			r.Enhanced, text = enh, rest
		}
		if text != "" {
			texts = append(texts, text)
		}
	}
	// SMTP replies are US-ASCII (RFC 5321 §2.4).
	r.Text = strings.Map(func(r rune) rune {
		if r > 126 {
			return '?'
		}
		return r
	}, oneLine(strings.Join(texts, " ")))
	if len(r.Text) > maxReplyText {
		r.Text = r.Text[:maxReplyText]
	}
	return r, nil
}

// enhanced parses an RFC 3463 status code "class.subject.detail" at the
// start of text whose class matches the reply's.
func enhanced(text string, class int) ([3]int, string, bool) {
	word, rest, _ := strings.Cut(text, " ")
	parts := strings.Split(word, ".")
	if len(parts) != 3 {
		return [3]int{}, text, false
	}
	var e [3]int
	for i, p := range parts {
		n, err := strconv.Atoi(p)
		if err != nil || n < 0 || n > 999 || len(p) > 3 {
			return [3]int{}, text, false
		}
		e[i] = n
	}
	if e[0] != class {
		return [3]int{}, text, false
	}
	return e, strings.TrimLeft(rest, " "), true
}

// oneLine makes text from the milter safe for one log or reply line:
// control characters become spaces.
func oneLine(s string) string {
	return strings.TrimSpace(strings.Map(func(r rune) rune {
		if r < 32 || r == 127 {
			return ' '
		}
		return r
	}, s))
}
