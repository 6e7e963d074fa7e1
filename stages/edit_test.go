package stages

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

func hdr(kv ...string) Header {
	var h Header
	for i := 0; i < len(kv); i += 2 {
		h = append(h, Field{Name: kv[i], Value: kv[i+1]})
	}
	return h
}

func TestApplyEdits(t *testing.T) {
	base := func() *Transaction {
		return &Transaction{
			From:   "a@example.org",
			Rcpts:  []string{"b@example.test", "c@example.test"},
			Header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2", "X-A", "3"),
			Body:   BytesBody("old\r\n"),
		}
	}
	for _, c := range []struct {
		name   string
		edits  []Edit
		header Header   // nil: unchanged
		rcpts  []string // nil: unchanged
		from   *string  // nil: unchanged
		body   string   // "": unchanged
	}{
		{name: "add", edits: []Edit{{Op: HeaderAdd, Name: "X-New", Value: " v "}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2", "X-A", "3", "X-New", "v")},
		{name: "insert at top", edits: []Edit{{Op: HeaderInsert, Name: "Authentication-Results", Value: "mx; spf=pass"}},
			header: hdr("Authentication-Results", "mx; spf=pass", "Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2", "X-A", "3")},
		{name: "insert at index", edits: []Edit{{Op: HeaderInsert, Name: "X-I", Value: "i", Index: 2}},
			header: hdr("Received", "r1", "X-A", "1", "X-I", "i", "Subject", "hi", "X-A", "2", "X-A", "3")},
		{name: "insert past the end appends", edits: []Edit{{Op: HeaderInsert, Name: "X-I", Value: "i", Index: 99}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2", "X-A", "3", "X-I", "i")},
		{name: "change second", edits: []Edit{{Op: HeaderChange, Name: "x-a", Value: "two", Index: 2}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "x-a", "two", "X-A", "3")},
		{name: "change index 0 is the first", edits: []Edit{{Op: HeaderChange, Name: "X-A", Value: "one"}},
			header: hdr("Received", "r1", "X-A", "one", "Subject", "hi", "X-A", "2", "X-A", "3")},
		{name: "change with empty value deletes", edits: []Edit{{Op: HeaderChange, Name: "X-A", Index: 3}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2")},
		{name: "change of a missing field adds it", edits: []Edit{{Op: HeaderChange, Name: "X-B", Value: "b", Index: 1}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "2", "X-A", "3", "X-B", "b")},
		{name: "delete all", edits: []Edit{{Op: HeaderDelete, Name: "x-A"}},
			header: hdr("Received", "r1", "Subject", "hi")},
		{name: "delete one", edits: []Edit{{Op: HeaderDelete, Name: "X-A", Index: 2}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "hi", "X-A", "3")},
		{name: "delete missing is a no-op", edits: []Edit{{Op: HeaderDelete, Name: "X-A", Index: 4}}},
		{name: "subject tag", edits: []Edit{{Op: SubjectTag, Value: "[SPAM]"}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "[SPAM] hi", "X-A", "2", "X-A", "3")},
		{name: "subject tag once", edits: []Edit{{Op: SubjectTag, Value: "[SPAM]"}, {Op: SubjectTag, Value: "[SPAM]"}},
			header: hdr("Received", "r1", "X-A", "1", "Subject", "[SPAM] hi", "X-A", "2", "X-A", "3")},
		{name: "subject tag adds a subject", edits: []Edit{{Op: HeaderDelete, Name: "Subject"}, {Op: SubjectTag, Value: "[SPAM]"}},
			header: hdr("Received", "r1", "X-A", "1", "X-A", "2", "X-A", "3", "Subject", "[SPAM]")},
		{name: "rcpt add", edits: []Edit{{Op: RcptAdd, Value: "<archive@example.test>"}, {Op: RcptAdd, Value: "B@example.test"}},
			rcpts: []string{"b@example.test", "c@example.test", "archive@example.test"}},
		{name: "rcpt delete", edits: []Edit{{Op: RcptDelete, Value: "<C@example.test>"}},
			rcpts: []string{"b@example.test"}},
		// An address from a stage enters in canonical form, as one from
		// a client does, and compares in any spelling.
		{name: "rcpt add canonical", edits: []Edit{{Op: RcptAdd, Value: "<Archive@Bücher.TEST.>"}, {Op: RcptAdd, Value: "b@Example.test."}},
			rcpts: []string{"b@example.test", "c@example.test", "Archive@xn--bcher-kva.test"}},
		{name: "rcpt delete any spelling", edits: []Edit{{Op: RcptDelete, Value: "<C@EXAMPLE.test.>"}},
			rcpts: []string{"b@example.test"}},
		{name: "sender change canonical", edits: []Edit{{Op: SenderChange, Value: "<Bounces@Example.ORG.>"}},
			from: new("Bounces@example.org")},
		{name: "sender change", edits: []Edit{{Op: SenderChange, Value: "<bounces@example.org>"}},
			from: new("bounces@example.org")},
		{name: "sender to null", edits: []Edit{{Op: SenderChange, Value: "<>"}},
			from: new("")},
		{name: "body replace", edits: []Edit{{Op: BodyReplace, Body: []byte("new\nbody\rend")}},
			body: "new\r\nbody\r\nend"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tx := base()
			if err := ApplyEdits(tx, c.edits); err != nil {
				t.Fatal(err)
			}
			want := base()
			if c.header != nil {
				want.Header = c.header
			}
			if c.rcpts != nil {
				want.Rcpts = c.rcpts
			}
			if c.from != nil {
				want.From = *c.from
			}
			if c.body != "" {
				want.Body = BytesBody(c.body)
			}
			if !slices.Equal(tx.Header, want.Header) {
				t.Errorf("header\n got %q\nwant %q", tx.Header, want.Header)
			}
			if !slices.Equal(tx.Rcpts, want.Rcpts) {
				t.Errorf("rcpts %q, want %q", tx.Rcpts, want.Rcpts)
			}
			if tx.From != want.From {
				t.Errorf("from %q, want %q", tx.From, want.From)
			}
			if !bytes.Equal(tx.Body.(BytesBody), want.Body.(BytesBody)) {
				t.Errorf("body %q, want %q", tx.Body, want.Body)
			}
		})
	}
}

func TestApplyEditsAllOrNothing(t *testing.T) {
	header := hdr("Subject", "hi", "X-A", "1")
	tx := &Transaction{From: "a@example.org", Rcpts: []string{"b@example.test"}, Header: header}
	err := ApplyEdits(tx, []Edit{
		{Op: HeaderChange, Name: "X-A", Value: "changed"},
		{Op: RcptAdd, Value: "c@example.test"},
		{Op: HeaderAdd, Name: "X-Bad", Value: "x\rBcc: victim@example.org"},
	})
	if err == nil || !strings.Contains(err.Error(), "edit 3 (header_add X-Bad)") {
		t.Fatalf("error %v, want edit 3 refused", err)
	}
	if !slices.Equal(tx.Header, hdr("Subject", "hi", "X-A", "1")) || !slices.Equal(tx.Rcpts, []string{"b@example.test"}) {
		t.Errorf("transaction changed: %q %q", tx.Header, tx.Rcpts)
	}
	// The slice the transaction had is not written into either: a stage
	// that outlived its timeout may still read it.
	if header[1].Value != "1" {
		t.Errorf("the original header slice was written: %q", header)
	}
}

func TestApplyEditsRefuses(t *testing.T) {
	for _, e := range []Edit{
		{Op: HeaderAdd, Name: "X-A", Value: "a\r\nBcc: x@example.org"}, // injected field
		{Op: HeaderAdd, Name: "X-A", Value: "a\r\n \r\n b"},            // whitespace-only line
		{Op: HeaderAdd, Name: "X-A", Value: "a\nb"},                    // bare LF
		{Op: HeaderAdd, Name: "X-A", Value: "a\rb"},                    // bare CR
		{Op: HeaderAdd, Name: "X-A", Value: "a\x00b"},                  // NUL
		{Op: HeaderAdd, Name: "X A", Value: "a"},                       // space in name
		{Op: HeaderAdd, Name: "X:A", Value: "a"},                       // colon in name
		{Op: HeaderAdd, Name: "", Value: "a"},                          // no name
		{Op: HeaderAdd, Name: "X-A", Value: strings.Repeat("x", 1000)}, // over 998, nowhere to fold
		{Op: HeaderInsert, Name: "X-A", Value: "a", Index: -1},
		{Op: HeaderChange, Name: "X-A", Value: "a\nb"},
		{Op: HeaderDelete, Name: "X-A", Index: -1},
		{Op: SubjectTag, Value: "[SPAM]\r\nBcc: x@example.org"},
		{Op: SubjectTag, Value: " "},
		{Op: RcptAdd, Value: ""},
		{Op: RcptAdd, Value: "a@example.test> NOTIFY=NEVER"},
		{Op: RcptAdd, Value: "a@bad_domain.test"}, // no route could ever take it
		{Op: RcptAdd, Value: "a@"},
		{Op: SenderChange, Value: "a@example.org\r\nRCPT TO:<x@example.org>"},
		{Op: 99},
	} {
		tx := &Transaction{Header: hdr("Subject", "hi")}
		if err := ApplyEdits(tx, []Edit{e}); err == nil {
			t.Errorf("%s %q %q: accepted", e.Op, e.Name, e.Value)
		}
	}
}

// TestFolding checks that ApplyEdits writes a field as NewField
// makes it, whose tests check the folding itself: a long value folded, a
// value the stage folded already kept as it came.
func TestFolding(t *testing.T) {
	add := []Edit{
		{Op: HeaderAdd, Name: "Authentication-Results", Value: "mx.example.test; spf=pass smtp.mailfrom=sender@example.org; dkim=pass header.d=example.org header.s=sel; dmarc=pass header.from=example.org"},
		{Op: HeaderAdd, Name: "DKIM-Signature", Value: "v=1; a=rsa-sha256;\r\n\tb=abc"},
	}
	tx := &Transaction{}
	if err := ApplyEdits(tx, add); err != nil {
		t.Fatal(err)
	}
	if len(tx.Header) != len(add) || !strings.Contains(tx.Header[0].Value, "\r\n") {
		t.Fatalf("header %q", tx.Header)
	}
	for i, e := range add {
		if want, err := NewField(e.Name, e.Value); err != nil || tx.Header[i] != want {
			t.Errorf("field %q, want %q (%v)", tx.Header[i], want, err)
		}
	}
}

func TestSubjectTagFoldsLongSubject(t *testing.T) {
	subject := strings.Repeat("word ", 20) + "end"
	tx := &Transaction{Header: hdr("Subject", subject)}
	if err := ApplyEdits(tx, []Edit{{Op: SubjectTag, Value: "[SPAM]"}}); err != nil {
		t.Fatal(err)
	}
	if got := tx.Header.Get("Subject"); got != "[SPAM] "+subject {
		t.Errorf("subject %q", got)
	}
	for _, l := range strings.Split("Subject: "+tx.Header[0].Value, "\r\n") {
		if len(l) > 78 {
			t.Errorf("line of %d characters: %q", len(l), l)
		}
	}
}
