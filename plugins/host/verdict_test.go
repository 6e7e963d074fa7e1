package host

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/plugins/proto"
	"github.com/mailgate/mailgate/stages"
)

func TestToVerdict(t *testing.T) {
	reject := func(v *proto.Verdict) *proto.Verdict {
		v.Action = proto.Action_ACTION_REJECT
		return v
	}
	edit := func(e *proto.Edit) *proto.Verdict {
		return &proto.Verdict{Action: proto.Action_ACTION_CONTINUE, Edits: []*proto.Edit{e}}
	}
	hdr := func(name, value string) *proto.Edit {
		return &proto.Edit{Op: proto.EditOp_EDIT_OP_HEADER_ADD, Name: []byte(name), Value: []byte(value)}
	}
	for _, tc := range []struct {
		name    string
		v       *proto.Verdict
		mayEdit bool
		err     string // "" for a valid verdict
	}{
		{"plain", &proto.Verdict{Action: proto.Action_ACTION_TAG, Score: 3, Result: []byte("spam")}, false, ""},
		{"no verdict", nil, false, "no verdict"},
		{"unspecified action", &proto.Verdict{}, false, "unknown action 0"},
		{"unknown action", &proto.Verdict{Action: 7}, false, "unknown action 7"},
		{"NaN score", &proto.Verdict{Action: 1, Score: math.NaN()}, false, "score NaN"},
		{"reply", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Enhanced: []int32{5, 7, 1}, Text: "no"}}), false, ""},
		{"reply code", reject(&proto.Verdict{Reply: &proto.Reply{Code: 650, Text: "no"}}), false, "reply: code 650"},
		{"enhanced class", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Enhanced: []int32{4, 7, 1}}}), false, "reply: enhanced code 4.7.1 with 550"},
		{"enhanced length", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Enhanced: []int32{5, 7}}}), false, "reply: enhanced code of 2 numbers"},
		{"reply line break", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Text: "no\r\n250 ok"}}), false, "reply: text"},
		{"reply too long", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Text: strings.Repeat("x", 501)}}), false, "reply: text"},
		{"reply not ASCII", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Text: "nicht erwünscht"}}), false, "reply: text"},
		{"reply not UTF-8", reject(&proto.Verdict{Reply: &proto.Reply{Code: 550, Text: "bad \xff byte"}}), false, "reply: text"},
		{"edits undeclared", edit(hdr("X-A", "1")), false, "did not declare edits"},
		{"header add", edit(hdr("X-A", "1")), true, ""},
		{"folded value", edit(hdr("X-A", "1\r\n\t2")), true, ""},
		{"bare LF in value", edit(hdr("X-A", "1\nX-B: 2")), true, "edit 1: header_add"},
		{"CRLF without fold", edit(hdr("X-A", "1\r\nX-B: 2")), true, "edit 1: header_add"},
		{"CR at the end", edit(hdr("X-A", "1\r")), true, "edit 1: header_add"},
		{"name with colon", edit(hdr("X-A:", "1")), true, "edit 1: header_add"},
		{"name with space", edit(hdr("X A", "1")), true, "edit 1: header_add"},
		{"empty name", edit(hdr("", "1")), true, "edit 1: header_add"},
		{"unknown op", edit(&proto.Edit{Op: 99}), true, "edit 1: unknown edit operation 99"},
		{"negative index", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_HEADER_DELETE, Name: []byte("X-A"), Index: -1}), true, "index -1"},
		{"rcpt add", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_RCPT_ADD, Value: []byte("a@example.test")}), true, ""},
		{"rcpt add empty", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_RCPT_ADD}), true, "rcpt_add: address"},
		{"rcpt with CRLF", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_RCPT_ADD, Value: []byte("a@x\r\nRCPT TO:<b@y>")}), true, "rcpt_add: address"},
		{"null sender", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_SENDER_CHANGE}), true, ""},
		{"subject tag", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_SUBJECT_TAG, Value: []byte("[SPAM]")}), true, ""},
		{"body", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_BODY_REPLACE, Body: []byte("a\r\nb\r\n")}), true, ""},
		{"body bare LF", edit(&proto.Edit{Op: proto.EditOp_EDIT_OP_BODY_REPLACE, Body: []byte("a\n.\nb")}), true, "bare CR or LF"},
	} {
		_, err := toVerdict(tc.v, tc.mayEdit)
		switch {
		case tc.err == "" && err != nil:
			t.Errorf("%s: %v", tc.name, err)
		case tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)):
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
}

func TestToVerdictFields(t *testing.T) {
	v, err := toVerdict(&proto.Verdict{
		Action: proto.Action_ACTION_QUARANTINE, Score: 1.5, Result: []byte("infected"), Reason: []byte("Eicar-Test \xff"),
		Reply: &proto.Reply{Code: 550, Text: "no"},
		Edits: []*proto.Edit{{Op: proto.EditOp_EDIT_OP_HEADER_CHANGE, Name: []byte("Subject"), Value: []byte("caf\xe9"), Index: 2}},
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != stages.Quarantine || v.Score != 1.5 || v.Result != "infected" || v.Reason != "Eicar-Test \xff" ||
		v.Reply.String() != "550 5.0.0 no" || len(v.Edits) != 1 ||
		fmt.Sprint(v.Edits[0]) != fmt.Sprint(stages.Edit{Op: stages.HeaderChange, Name: "Subject", Value: "caf\xe9", Index: 2}) {
		t.Errorf("verdict %+v", v)
	}
}
