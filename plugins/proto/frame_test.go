package proto

import (
	"bytes"
	"testing"

	gproto "google.golang.org/protobuf/proto"
)

// wireFrames are frames with every kind and every field of the data path
// set, as the host and a plugin send them.
func wireFrames() []*Frame {
	req := &RunRequest{Phase: Phase_PHASE_DATA, Stage: "spam",
		Transaction: &Transaction{QueueId: "Q1", From: []byte("a@b.test"), Rcpts: [][]byte{[]byte("c@d.test"), []byte("e@f.test")},
			Client:  &Client{Addr: "192.0.2.1", Port: 2525, Name: "mx.b.test", Helo: []byte("mx"), Tls: "TLS1.3", AuthUser: []byte("u"), Trusted: true},
			Header:  []*HeaderField{{Name: []byte("Subject"), Value: []byte("hi"), Raw: []byte("Subject:hi")}},
			Results: []*Result{{Stage: "spf", Kind: "spf", Action: Action_ACTION_CONTINUE, Score: -0.5, Result: []byte("pass"), Reason: []byte("r"), Errored: true}}},
		Body: &Body{Source: &Body_File{File: &FileRef{Path: "/spool/msg/Q1", Offset: 120, Length: 5000}}}}
	verdict := &Verdict{Action: Action_ACTION_REJECT, Score: 7.25, Result: []byte("spam"), Reason: []byte("why"),
		Reply: &Reply{Code: 554, Enhanced: []int32{5, 7, 1}, Text: "no"},
		Edits: []*Edit{{Op: EditOp_EDIT_OP_HEADER_ADD, Name: []byte("X-Spam"), Value: []byte("yes"), Index: -1, Body: []byte("b")}}}
	return []*Frame{
		{Id: 1, Kind: &Frame_Call{Call: &Call{Request: req, TimeoutNs: 5e9}}},
		{Id: 2, Kind: &Frame_Batch{Batch: &Batch{Request: req, Steps: []*Step{{Stage: "spam", Group: 1, TimeoutNs: 3e9,
			Broken: &Result{Stage: "spam", Action: Action_ACTION_TEMPFAIL}, Results: map[string]Action{"spam": Action_ACTION_QUARANTINE, "ham": Action_ACTION_ACCEPT}}}}}},
		{Id: 3, Kind: &Frame_Response{Response: &RunResponse{Verdict: verdict}}},
		{Id: 4, Kind: &Frame_BatchResponse{BatchResponse: &BatchResponse{Answers: []*StepAnswer{
			{Outcome: &StepAnswer_Response{Response: &RunResponse{Verdict: verdict}}, DurationNs: 1234, Result: &Result{Stage: "spam"}},
			{Outcome: &StepAnswer_Error{Error: &CallError{Code: 4, Message: "deadline"}}}}}}},
		{Id: 5, Kind: &Frame_Error{Error: &CallError{Code: 13, Message: "panic"}}},
		{Id: 6, Kind: &Frame_Cancel{Cancel: &Cancel{}}},
		{Id: 7, Kind: &Frame_Call{Call: &Call{Request: &RunRequest{Body: &Body{Source: &Body_Inline{Inline: []byte("body\r\n")}}}}}},
	}
}

// TestVTWire: the data path's frames, written and read by the generated
// code of frame.go, are the protobuf runtime's: a plugin built with an
// older SDK (which used the runtime) and this host understand each other.
func TestVTWire(t *testing.T) {
	for _, f := range wireFrames() {
		vt, err := AppendFrame(nil, f)
		if err != nil {
			t.Fatal(err)
		}
		std, err := gproto.Marshal(f)
		if err != nil {
			t.Fatal(err)
		}
		var fromVT Frame
		if err := gproto.Unmarshal(vt[4:], &fromVT); err != nil || !gproto.Equal(&fromVT, f) {
			t.Errorf("frame %d: the runtime reads the generated code's bytes as %v (%v), want %v", f.Id, &fromVT, err, f)
		}
		var fromStd Frame
		var buf []byte
		if err := ReadFrame(bytes.NewReader(append(vt[:4:4], std...)), &buf, &fromStd); err != nil || !gproto.Equal(&fromStd, f) {
			t.Errorf("frame %d: ReadFrame reads the runtime's bytes as %v (%v), want %v", f.Id, &fromStd, err, f)
		}
	}
}

// TestReadFrameKeepsNothingOfItsBuffer: what ReadFrame decodes is the
// frame's own, not a view of the buffer the next frame is read into.
func TestReadFrameKeepsNothingOfItsBuffer(t *testing.T) {
	var stream []byte
	frames := wireFrames()
	for _, f := range frames {
		var err error
		if stream, err = AppendFrame(stream, f); err != nil {
			t.Fatal(err)
		}
	}
	r, buf := bytes.NewReader(stream), []byte(nil)
	got := make([]*Frame, len(frames))
	for i := range frames {
		got[i] = new(Frame)
		if err := ReadFrame(r, &buf, got[i]); err != nil {
			t.Fatal(err)
		}
	}
	for i := range buf {
		buf[i] = 'x'
	}
	for i, f := range frames {
		if !gproto.Equal(got[i], f) {
			t.Errorf("frame %d changed with the buffer: %v", f.Id, got[i])
		}
	}
}

func BenchmarkFrame(b *testing.B) {
	f := wireFrames()[1]
	var wb, rb []byte
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if wb, err = AppendFrame(wb[:0], f); err != nil {
			b.Fatal(err)
		}
		if err := ReadFrame(bytes.NewReader(wb), &rb, new(Frame)); err != nil {
			b.Fatal(err)
		}
	}
}

// TestReadFrameIntoUsedFrame: a frame read into one that held another is
// the new frame alone, as the runtime's Unmarshal leaves it.
func TestReadFrameIntoUsedFrame(t *testing.T) {
	// The second has no id: one kept of the first would show.
	frames := []*Frame{wireFrames()[0], {Kind: &Frame_Cancel{Cancel: &Cancel{}}}}
	var stream []byte
	for _, f := range frames {
		var err error
		if stream, err = AppendFrame(stream, f); err != nil {
			t.Fatal(err)
		}
	}
	r, buf, f := bytes.NewReader(stream), []byte(nil), new(Frame)
	for _, want := range frames {
		if err := ReadFrame(r, &buf, f); err != nil {
			t.Fatal(err)
		}
		if !gproto.Equal(f, want) {
			t.Errorf("read %v, want %v", f, want)
		}
	}
}
