package main

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"log/slog"
	"mime/quotedprintable"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/host"
	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
)

// fakePE is the start of a Windows program: a DOS header whose e_lfanew
// points to a PE signature. It runs nothing; it only looks the part.
func fakePE() []byte {
	b := make([]byte, 512)
	copy(b, "MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x40:], "This program cannot be run in DOS mode.\r\r\n$")
	copy(b[0x80:], "PE\x00\x00\x4c\x01")
	return b
}

func fakeELF() []byte { return append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 120)...) }
func fakeMachO() []byte {
	return append([]byte{0xcf, 0xfa, 0xed, 0xfe, 7, 0, 0, 1}, make([]byte, 60)...)
}

const pdf = "%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"

func b64(b []byte) string {
	s := base64.StdEncoding.EncodeToString(b)
	var out strings.Builder
	for len(s) > 76 {
		out.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	return out.String() + s + "\r\n"
}

func qp(b []byte) string {
	var out strings.Builder
	w := quotedprintable.NewWriter(&out)
	w.Write(b)
	w.Close()
	return out.String()
}

// entity is one MIME entity: header fields (one per line), a blank line,
// the body.
func entity(body string, fields ...string) string {
	return strings.Join(fields, "\r\n") + "\r\n\r\n" + body
}

func attachment(ctype, name, cte, body string) string {
	return entity(body,
		"Content-Type: "+ctype+`; name="`+name+`"`,
		`Content-Disposition: attachment; filename="`+name+`"`,
		"Content-Transfer-Encoding: "+cte)
}

// mixed is a multipart/mixed entity of parts.
func mixed(boundary string, parts ...string) string {
	var b strings.Builder
	b.WriteString("This is a multi-part message in MIME format.\r\n")
	for _, p := range parts {
		b.WriteString("--" + boundary + "\r\n" + p + "\r\n")
	}
	b.WriteString("--" + boundary + "--\r\n")
	return entity(b.String(), "Content-Type: multipart/mixed; boundary=\""+boundary+"\"")
}

func textPart(s string) string { return entity(s, "Content-Type: text/plain; charset=utf-8") }

// message puts a top-level entity under the usual fields and splits it as
// the gateway does: header fields, then the body.
func message(t testing.TB, top string) *stages.Transaction {
	t.Helper()
	raw := "From: a@example.org\r\nTo: b@example.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n" + top
	r := bufio.NewReader(strings.NewReader(raw))
	h, err := stages.ParseHeader(r)
	if err != nil {
		t.Fatal(err)
	}
	var body strings.Builder
	if _, err := r.WriteTo(&body); err != nil {
		t.Fatal(err)
	}
	return &stages.Transaction{From: "a@example.org", Rcpts: []string{"b@example.test"}, Header: h, Body: stages.BytesBody(body.String())}
}

func stage(t *testing.T, config string) stages.Stage {
	t.Helper()
	st, err := sdktest.Stage(t, New, config)
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func run(t *testing.T, st stages.Stage, tx *stages.Transaction) stages.Verdict {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := st.Run(ctx, stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestRejectsDisguisedPE(t *testing.T) {
	st := stage(t, `{"reply": "Executables are not accepted here"}`)
	tx := message(t, mixed("b1",
		textPart("Please find the invoice attached.\r\n"),
		attachment("application/pdf", "invoice.pdf", "base64", b64(fakePE()))))
	if !strings.HasPrefix(b64(fakePE()), "TVqQAAMAAAAEAAAA//8AAA") {
		t.Fatalf("fake PE encodes as %.20s", b64(fakePE()))
	}
	v := run(t, st, tx)
	if v.Action != stages.Reject || v.Result != "executable" ||
		v.Reply == nil || v.Reply.String() != "550 5.7.1 Executables are not accepted here" {
		t.Errorf("verdict %+v reply %v", v, v.Reply)
	}
	if want := `part 2 (file name "invoice.pdf") is a Windows PE executable`; v.Reason != want {
		t.Errorf("reason %q, want %q", v.Reason, want)
	}
}

func TestPassesPDF(t *testing.T) {
	st := stage(t, `{}`)
	tx := message(t, mixed("b1",
		textPart("Please find the invoice attached.\r\n"),
		attachment("application/pdf", "invoice.pdf", "base64", b64([]byte(pdf)))))
	if v := run(t, st, tx); v.Action != stages.Continue || v.Result != "clean" {
		t.Errorf("verdict %+v", v)
	}
}

func TestFormats(t *testing.T) {
	java := append([]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 0x34}, make([]byte, 40)...)
	fat := append([]byte{0xca, 0xfe, 0xba, 0xbe, 0, 0, 0, 2}, make([]byte, 40)...)
	inner := "From: c@example.org\r\nSubject: fwd\r\n" +
		mixed("in", textPart("hi\r\n"), attachment("image/png", "cat.png", "base64", b64(fakeELF())))
	for _, tc := range []struct {
		name, config, top, result string
	}{
		{"ELF in an attached message", `{}`,
			mixed("b1", textPart("see attached\r\n"), entity(inner, "Content-Type: message/rfc822")), "executable"},
		{"quoted-printable PE", `{}`,
			mixed("b1", attachment("text/plain", "notes.txt", "quoted-printable", qp(fakePE()))), "executable"},
		{"whole body is Mach-O", `{}`,
			entity(b64(fakeMachO()), "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64"), "executable"},
		{"universal Mach-O", `{}`, mixed("b1", attachment("application/zip", "a.zip", "base64", b64(fat))), "executable"},
		{"Java class is not Mach-O", `{}`, mixed("b1", attachment("application/java", "A.class", "base64", b64(java))), "clean"},
		{"script when asked", `{"scripts": true}`,
			mixed("b1", attachment("text/plain", "run.txt", "7bit", "#!/bin/sh\r\nrm -rf ~\r\n")), "executable"},
		{"script not asked", `{}`,
			mixed("b1", attachment("text/plain", "run.txt", "7bit", "#!/bin/sh\r\nrm -rf ~\r\n")), "clean"},
		{"allowed extension", `{"allow_extensions": ["EXE"]}`,
			mixed("b1", attachment("application/octet-stream", "setup.exe", "base64", b64(fakePE()))), "clean"},
		{"allowed extension, other name", `{"allow_extensions": [".exe"]}`,
			mixed("b1", attachment("application/octet-stream", "setup.exe.pdf", "base64", b64(fakePE()))), "executable"},
		{"text starting with MZ", `{}`, textPart("MZ is short for Mozambique.\r\n"), "clean"},
		{"too deep", `{"max_depth": 2}`, mixed("a", mixed("b", mixed("c", textPart("hi\r\n")))), "too-complex"},
		{"too many parts", `{"max_parts": 3}`,
			mixed("a", textPart("1\r\n"), textPart("2\r\n"), textPart("3\r\n")), "too-complex"},
		{"unterminated multipart", `{}`,
			strings.TrimSuffix(mixed("b1", textPart("hi\r\n")), "--b1--\r\n"), "malformed"},
		{"PE before the break", `{}`,
			strings.TrimSuffix(mixed("b1", attachment("image/gif", "a.gif", "base64", b64(fakePE()))), "--b1--\r\n"), "executable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := run(t, stage(t, tc.config), message(t, tc.top))
			if v.Result != tc.result {
				t.Errorf("result %q (%s), want %q", v.Result, v.Reason, tc.result)
			}
			if want := tc.result == "executable" || tc.result == "too-complex"; want != (v.Action == stages.Reject) {
				t.Errorf("action %v for %q", v.Action, v.Result)
			}
		})
	}
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ config, key, text string }{
		{`{"bogus": true}`, "bogus", "unknown key"},
		// The key [stage.results] replaced, refused with what to write there.
		{`{"action": "quarantine"}`, "action", `replaced by [stage.results]: executable = "quarantine", too-complex = "quarantine"`},
		{`{"reply": ""}`, "reply", "expect one non-empty line of text"},
		{`{"allow_extensions": ".exe"}`, "allow_extensions", "unexpected string; expect an array of strings"},
		{`{"max_depth": 0}`, "max_depth", "expect a number above 0"},
	} {
		_, err := sdktest.Stage(t, New, tc.config)
		var ce *host.ConfigError
		if !errors.As(err, &ce) || ce.Key != tc.key || ce.Message != tc.text {
			t.Errorf("%s: %v, want key %q: %q", tc.config, err, tc.key, tc.text)
		}
	}
}

// TestBinary runs the plugin as the gateway does: the built executable,
// started by the host.
func TestBinary(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "exeblock")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Stderr = os.Stderr
	if err := build.Run(); err != nil {
		t.Fatalf("go build: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := host.Start(ctx, host.Spec{
		Name:   "exeblock",
		Cmd:    []string{bin},
		Config: []byte(`{"reply": "No programs, please"}`),
		Logger: slog.New(slog.DiscardHandler),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if info := p.Info(); info.Kind != "exeblock" || info.Phases != stages.Data {
		t.Errorf("info %+v", info)
	}
	v := run(t, p, message(t, mixed("b1", attachment("application/pdf", "invoice.pdf", "base64", b64(fakePE())))))
	if v.Action != stages.Reject || v.Reply == nil || v.Reply.Text != "No programs, please" {
		t.Errorf("verdict %+v", v)
	}
}

// FuzzRun feeds arbitrary messages to the MIME walk: it must neither panic
// nor fail, only find or not find.
func FuzzRun(f *testing.F) {
	f.Add(mixed("b1", textPart("hi\r\n"), attachment("application/pdf", "x.pdf", "base64", b64(fakePE()))))
	f.Add(entity("=4D=5A\r\n", "Content-Type: text/plain", "Content-Transfer-Encoding: quoted-printable"))
	f.Add(mixed("a", entity(mixed("b", textPart("x")), "Content-Type: message/rfc822")))
	st, err := sdktest.Stage(f, New, `{"max_parts": 50}`)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, top string) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := st.Run(ctx, stages.Data, message(t, top)); err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}
