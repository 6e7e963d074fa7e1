package host

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

// toVerdict checks a plugin's verdict before the engine acts on it: a
// plugin is outside the gateway's trust, and a header value with a bare CR
// or a reply with a line break would let it inject protocol text.
func toVerdict(v *proto.Verdict, mayEdit bool) (stages.Verdict, error) {
	if v == nil {
		return stages.Verdict{}, errors.New("no verdict")
	}
	action, err := proto.ToAction(v.GetAction())
	if err != nil {
		return stages.Verdict{}, err
	}
	if math.IsNaN(v.GetScore()) || math.IsInf(v.GetScore(), 0) {
		return stages.Verdict{}, fmt.Errorf("score %v", v.GetScore())
	}
	out := stages.Verdict{Action: action, Score: v.GetScore(), Result: string(v.GetResult()), Reason: string(v.GetReason())}
	if r := v.GetReply(); r != nil {
		if out.Reply, err = toReply(r); err != nil {
			return stages.Verdict{}, fmt.Errorf("reply: %w", err)
		}
	}
	if len(v.GetEdits()) > 0 && !mayEdit {
		return stages.Verdict{}, errors.New("edits from a plugin that did not declare edits in Describe")
	}
	for i, e := range v.GetEdits() {
		edit, err := toEdit(e)
		if err != nil {
			return stages.Verdict{}, fmt.Errorf("edit %d: %w", i+1, err)
		}
		out.Edits = append(out.Edits, edit)
	}
	return out, nil
}

// maxReplyText keeps a reply line within the 512 octets of RFC 5321
// §4.5.3.1.5, counting "550 5.7.1 " and CRLF.
const maxReplyText = 500

func toReply(r *proto.Reply) (*stages.Reply, error) {
	code := int(r.GetCode())
	// RFC 5321 §4.2: 2yz to 5yz.
	if code < 200 || code > 599 {
		return nil, fmt.Errorf("code %d", code)
	}
	out := &stages.Reply{Code: code, Text: r.GetText()}
	switch e := r.GetEnhanced(); len(e) {
	case 0:
	case 3:
		// RFC 2034 §4: the class is 2, 4 or 5 and agrees with the reply
		// code; subject and detail have at most three digits.
		if int(e[0]) != code/100 || e[0] == 3 || e[1] < 0 || e[1] > 999 || e[2] < 0 || e[2] > 999 {
			return nil, fmt.Errorf("enhanced code %d.%d.%d with %d", e[0], e[1], e[2], code)
		}
		out.Enhanced = [3]int{int(e[0]), int(e[1]), int(e[2])}
	default:
		return nil, fmt.Errorf("enhanced code of %d numbers", len(e))
	}
	// RFC 5321 §4.2: the text is printable US-ASCII (and a tab); the data
	// path does not check that a string is even UTF-8.
	if len(out.Text) > maxReplyText || strings.ContainsFunc(out.Text, func(r rune) bool { return r != '\t' && (isControl(r) || r > 126) }) {
		return nil, fmt.Errorf("text %q", out.Text)
	}
	return out, nil
}

func toEdit(e *proto.Edit) (stages.Edit, error) {
	op, err := proto.ToEditOp(e.GetOp())
	if err != nil {
		return stages.Edit{}, err
	}
	out := stages.Edit{Op: op, Name: string(e.GetName()), Value: string(e.GetValue()), Index: int(e.GetIndex()), Body: e.GetBody()}
	if out.Index < 0 || int64(out.Index) != e.GetIndex() {
		return stages.Edit{}, fmt.Errorf("%s: index %d", op, e.GetIndex())
	}
	switch op {
	case stages.HeaderAdd, stages.HeaderInsert, stages.HeaderChange:
		if !validFieldName(out.Name) || !validFieldValue(out.Value) {
			return stages.Edit{}, fmt.Errorf("%s: field %q: %q", op, out.Name, out.Value)
		}
	case stages.HeaderDelete:
		if !validFieldName(out.Name) {
			return stages.Edit{}, fmt.Errorf("%s: field %q", op, out.Name)
		}
	case stages.SubjectTag:
		if out.Value == "" || strings.ContainsFunc(out.Value, isControl) {
			return stages.Edit{}, fmt.Errorf("%s: %q", op, out.Value)
		}
	case stages.RcptAdd, stages.RcptDelete, stages.SenderChange:
		// The null sender <> is a valid envelope sender, never a recipient.
		if (out.Value == "" && op != stages.SenderChange) || strings.ContainsFunc(out.Value, isAddressBreaker) {
			return stages.Edit{}, fmt.Errorf("%s: address %q", op, out.Value)
		}
	case stages.BodyReplace:
		if !crlfOnly(out.Body) {
			return stages.Edit{}, fmt.Errorf("%s: bare CR or LF in the new body", op)
		}
	}
	return out, nil
}

// validFieldName follows RFC 5322 §3.6.8: printable US-ASCII but colon.
func validFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := range len(s) {
		if c := s[i]; c < 33 || c > 126 || c == ':' {
			return false
		}
	}
	return true
}

// validFieldValue allows folding (CRLF followed by white space, RFC 5322
// §2.2.3) but no other CR or LF, which would end the field early, and no
// other control character but tab.
func validFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == '\r':
			if i+2 >= len(s) || s[i+1] != '\n' || (s[i+2] != ' ' && s[i+2] != '\t') {
				return false
			}
			i++
		case c == '\t':
		case c < 32 || c == 127:
			return false
		}
	}
	return true
}

func isControl(r rune) bool { return r < 32 || r == 127 }

func isAddressBreaker(r rune) bool { return isControl(r) || r == ' ' || r == '<' || r == '>' }

// crlfOnly reports whether every CR and LF in b is part of a CRLF pair.
func crlfOnly(b []byte) bool {
	for i, c := range b {
		switch {
		case c == '\r' && (i+1 == len(b) || b[i+1] != '\n'):
			return false
		case c == '\n' && (i == 0 || b[i-1] != '\r'):
			return false
		}
	}
	return true
}
