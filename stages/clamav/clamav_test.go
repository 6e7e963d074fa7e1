package clamav

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/clamdtest"
)

func newFilter(t *testing.T, config string) stages.Filter {
	t.Helper()
	f, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	return f
}

// message splits a CRLF message into a transaction's header and body.
func message(t testing.TB, raw string) *stages.Transaction {
	t.Helper()
	head, body, ok := strings.Cut(raw, "\r\n\r\n")
	if !ok {
		t.Fatalf("no end of header in %q", raw)
	}
	var h stages.Header
	for _, line := range strings.Split(head, "\r\n") {
		name, value, _ := strings.Cut(line, ": ")
		h = append(h, stages.Field{Name: name, Value: value})
	}
	return &stages.Transaction{QueueID: "Q1", From: "a@example.org", Rcpts: []string{"b@example.test"},
		Header: h, Body: stages.BytesBody(body)}
}

func run(t testing.TB, f stages.Filter, tx *stages.Transaction) (stages.Verdict, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	return f.Run(ctx, stages.Data, tx)
}

const plain = "From: a@example.org\r\nTo: b@example.test\r\nSubject: hello\r\n\r\n"

func eicarAttachment() string {
	return "From: a@example.org\r\nTo: b@example.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nPlease find the invoice attached.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\n" +
		"Content-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"invoice.com\"\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(clamdtest.EICAR)) + "\r\n--b1--\r\n"
}

func TestScan(t *testing.T) {
	clamd := clamdtest.Start(t)
	tests := []struct {
		name    string
		config  string
		msg     string
		want    stages.Verdict
		noReply bool
	}{{
		name:   "eicar body",
		config: `{"address": "unix:` + clamd.Socket() + `"}`,
		msg:    plain + clamdtest.EICAR + "\r\n",
		want: stages.Verdict{Action: stages.Reject, Result: "infected", Reason: "signature " + clamdtest.Signature,
			Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}},
	}, {
		name:   "eicar base64 attachment over tcp",
		config: `{"address": "tcp:` + clamd.TCPAddr() + `"}`,
		msg:    eicarAttachment(),
		want: stages.Verdict{Action: stages.Reject, Result: "infected", Reason: "signature " + clamdtest.Signature,
			Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}},
	}, {
		name:   "a score, plain path",
		config: `{"address": "` + clamd.Socket() + `", "score": 20}`,
		msg:    eicarAttachment(),
		want: stages.Verdict{Action: stages.Reject, Score: 20, Result: "infected", Reason: "signature " + clamdtest.Signature,
			Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}},
	}, {
		name:   "plain host:port",
		config: `{"address": "` + clamd.TCPAddr() + `", "score": 7.5}`,
		msg:    plain + clamdtest.EICAR + "\r\n",
		want: stages.Verdict{Action: stages.Reject, Score: 7.5, Result: "infected", Reason: "signature " + clamdtest.Signature,
			Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}},
	}, {
		name:   "clean",
		config: `{"address": "unix:` + clamd.Socket() + `"}`,
		msg:    plain + "Nothing to see here.\r\n",
		want:   stages.Verdict{Result: "clean"},
	}, {
		name:   "eicar only in a header",
		config: `{"address": "unix:` + clamd.Socket() + `"}`,
		msg:    "From: a@example.org\r\nX-Test: " + clamdtest.EICAR + "\r\n\r\nhello\r\n",
		want: stages.Verdict{Action: stages.Reject, Result: "infected", Reason: "signature " + clamdtest.Signature,
			Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			v, err := run(t, newFilter(t, tc.config), message(t, tc.msg))
			if err != nil {
				t.Fatalf("Run: %v\nclamd log:\n%s", err, clamd.Log())
			}
			checkVerdict(t, v, tc.want)
		})
	}
}

func checkVerdict(t *testing.T, got, want stages.Verdict) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if !bytes.Equal(g, w) {
		t.Errorf("verdict\n got %s\nwant %s", g, w)
	}
	if got.Reply != nil && strings.Contains(strings.ToLower(got.Reply.String()), "eicar") {
		t.Errorf("reply %q names the signature", got.Reply)
	}
}

// TestLargeMessage streams a 10 MB message: it must reach clamd whole, so a
// virus at its very end is found.
func TestLargeMessage(t *testing.T) {
	clamd := clamdtest.Start(t)
	f := newFilter(t, `{"address": "unix:`+clamd.Socket()+`"}`)
	filler := strings.Repeat(strings.Repeat("lorem ipsum ", 6)+"\r\n", 10<<20/74)
	v, err := run(t, f, message(t, plain+filler))
	if err != nil {
		t.Fatalf("clean: %v\nclamd log:\n%s", err, clamd.Log())
	}
	checkVerdict(t, v, stages.Verdict{Result: "clean"})

	v, err = run(t, f, message(t, plain+filler+clamdtest.EICAR+"\r\n"))
	if err != nil {
		t.Fatalf("infected: %v\nclamd log:\n%s", err, clamd.Log())
	}
	if v.Result != "infected" {
		t.Errorf("EICAR after 10 MB: result %q, reason %q", v.Result, v.Reason)
	}
}

func TestOversize(t *testing.T) {
	msg := plain + strings.Repeat("x", 2000) + "\r\n"
	// Nothing listens here: a message that is skipped must not even
	// connect.
	nowhere := "unix:" + filepath.Join(t.TempDir(), "none.sock")

	v, err := run(t, newFilter(t, `{"address": "`+nowhere+`", "max_size": "1000B"}`), message(t, msg))
	if err != nil {
		t.Fatalf("oversize skip: %v", err)
	}
	if v.Action != stages.Continue || v.Result != "skipped" || !strings.Contains(v.Reason, "larger than max_size 1000") {
		t.Errorf("oversize skip: verdict %+v", v)
	}

	_, err = run(t, newFilter(t, `{"address": "`+nowhere+`", "max_size": "1000B", "oversize": "error"}`), message(t, msg))
	if err == nil || !strings.Contains(err.Error(), "larger than max_size 1000") {
		t.Errorf("oversize error: err %v", err)
	}
}

// TestClamdLimit is a max_size above clamd's StreamMaxLength: clamd refuses
// the stream, which is a stage error, not a clean message.
func TestClamdLimit(t *testing.T) {
	clamd := clamdtest.StartWith(t, clamdtest.Options{StreamMaxLength: 100 << 10})
	for _, addr := range []string{"unix:" + clamd.Socket(), "tcp:" + clamd.TCPAddr()} {
		f := newFilter(t, `{"address": "`+addr+`"}`)
		_, err := run(t, f, message(t, plain+strings.Repeat("0123456789abcdef\r\n", 1<<20/18*3)))
		if err == nil || !strings.Contains(err.Error(), "INSTREAM size limit exceeded") {
			t.Errorf("%s: err %v, want clamd's size limit", addr, err)
		}
	}
}

func TestClamdDown(t *testing.T) {
	clamd := clamdtest.Start(t)
	unix := newFilter(t, `{"address": "unix:`+clamd.Socket()+`"}`)
	tcp := newFilter(t, `{"address": "tcp:`+clamd.TCPAddr()+`"}`)
	if _, err := run(t, unix, message(t, plain+"hello\r\n")); err != nil {
		t.Fatalf("clamd up: %v", err)
	}
	clamd.Stop()
	for name, f := range map[string]stages.Filter{"unix": unix, "tcp": tcp} {
		v, err := run(t, f, message(t, plain+"hello\r\n"))
		if err == nil {
			t.Errorf("%s: clamd down: no error, verdict %+v", name, v)
		}
	}
}

// TestTimeout is a clamd that accepts and never answers: the scan ends with
// the context.
func TestTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(io.Discard, c)
			}()
		}
	}()
	f := newFilter(t, `{"address": "tcp:`+l.Addr().String()+`"}`)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err = f.Run(ctx, stages.Data, message(t, plain+"hello\r\n"))
	if err == nil || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Errorf("err %v, want a deadline error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("Run returned after %s", d)
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{`{"address": "unix:relative.sock"}`, `address: unexpected "unix:relative.sock"`},
		{`{"address": "tcp:localhost"}`, `address: unexpected "tcp:localhost"`},
		{`{"address": "clamd"}`, `address: unexpected "clamd"`},
		{`{"oversize": "truncate"}`, `oversize: unexpected "truncate"; expect skip or error`},
		{`{"infected": "quarantine"}`, `infected: replaced by [stage.results]: infected = "quarantine"`},
		{`{"address": "unix:/x", "infected": "reject"}`, `infected: replaced by [stage.results]: infected = "reject"`},
		{`{"max_size": "0B"}`, `max_size: unexpected 0`},
		{`{"adress": "unix:/x"}`, `adress: unknown key`},
	} {
		_, err := New(stages.Env{}, stages.JSONConfig([]byte(tc.config)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%s): err %v, want %q", tc.config, err, tc.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	f := newFilter(t, `{}`).(*ClamAV)
	if f.network != "unix" || f.addr != "/run/clamav/clamd.ctl" || f.maxSize != 25<<20 || !f.skipBig || f.score != 0 {
		t.Errorf("defaults: %+v", f)
	}
	if info := f.Info(); info.Kind != "clamav" || info.Phases != stages.Data || info.Needs != stages.NeedHeader|stages.NeedBody || info.Edits ||
		strings.Join(info.Results, " ") != "clean infected skipped" {
		t.Errorf("info: %+v", info)
	}
}

func TestParseReply(t *testing.T) {
	for _, tc := range []struct{ in, sig, err string }{
		{"stream: OK", "", ""},
		{"stream: OK\n", "", ""},
		{"stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1", ""},
		{"stream: Eicar(44d88612fea8a8f36de82e1278abb02f:68) FOUND", "Eicar(44d88612fea8a8f36de82e1278abb02f:68)", ""},
		{"INSTREAM size limit exceeded. ERROR", "", `error reply "INSTREAM size limit exceeded. ERROR"`},
		{"stream: Can't allocate memory ERROR", "", "error reply"},
		{"stream:  FOUND", "", "unexpected reply"},
		{"COMMAND READ TIMED OUT", "", "unexpected reply"},
		{"", "", "unexpected reply"},
	} {
		sig, err := parseReply(tc.in)
		if sig != tc.sig || (err == nil) != (tc.err == "") || (err != nil && !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("parseReply(%q) = %q, %v; want %q, %q", tc.in, sig, err, tc.sig, tc.err)
		}
	}
}

func FuzzParseReply(f *testing.F) {
	for _, s := range []string{"stream: OK", "stream: X FOUND", "INSTREAM size limit exceeded. ERROR", "stream:  FOUND", "\x00"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sig, err := parseReply(s)
		if err == nil && sig != "" && !strings.HasSuffix(strings.TrimSpace(s), " FOUND") {
			t.Errorf("parseReply(%q) found %q without FOUND", s, sig)
		}
		if err == nil && sig == "" && strings.TrimSpace(s) != "stream: OK" {
			t.Errorf("parseReply(%q) clean", s)
		}
	})
}

// TestPlugin runs the stage through the gateway's plugin host over gRPC.
func TestPlugin(t *testing.T) {
	clamd := clamdtest.Start(t)
	st, err := sdktest.Stage(t, New, `{"address": "unix:`+clamd.Socket()+`", "score": 1.5}`)
	if err != nil {
		t.Fatal(err)
	}
	if info := st.Info(); info.Kind != "clamav" || info.Needs&(stages.NeedHeader|stages.NeedBody) != stages.NeedHeader|stages.NeedBody {
		t.Errorf("info %+v", info)
	}
	v, err := run(t, st, message(t, eicarAttachment()))
	if err != nil {
		t.Fatal(err)
	}
	checkVerdict(t, v, stages.Verdict{Action: stages.Reject, Score: 1.5, Result: "infected", Reason: "signature " + clamdtest.Signature,
		Reply: &stages.Reply{Code: 554, Enhanced: [3]int{5, 7, 1}, Text: "Message rejected: virus found"}})

	// The old key is refused with its replacement, as the gateway reports it.
	if _, err := sdktest.Stage(t, New, `{"infected": "quarantine"}`); err == nil ||
		!strings.Contains(err.Error(), `infected: replaced by [stage.results]: infected = "quarantine"`) {
		t.Errorf("old key over the plugin host: err %v", err)
	}
}
