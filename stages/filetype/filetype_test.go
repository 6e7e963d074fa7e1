package filetype

import (
	"archive/zip"
	"bufio"
	"bytes"
	"compress/flate"
	"context"
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// pe is the start of a real Windows program: a DOS header whose e_lfanew
// (offset 0x3c) points to the PE signature and a COFF header for i386.
func pe() []byte {
	b := make([]byte, 1024)
	copy(b, "MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff")
	copy(b[0x4e:], "This program cannot be run in DOS mode.\r\r\n$")
	binary.LittleEndian.PutUint32(b[0x3c:], 0x80)
	copy(b[0x80:], "PE\x00\x00")
	binary.LittleEndian.PutUint16(b[0x84:], 0x14c) // IMAGE_FILE_MACHINE_I386
	binary.LittleEndian.PutUint16(b[0x86:], 3)     // sections
	return b
}

// pdf is a small, valid PDF.
var pdf = []byte("%PDF-1.4\n1 0 obj << /Type /Catalog /Pages 2 0 R >> endobj\n" +
	"2 0 obj << /Type /Pages /Kids [] /Count 0 >> endobj\n" +
	"trailer << /Root 1 0 R >>\n%%EOF\n")

type member struct {
	name string
	data []byte
}

func zipOf(t testing.TB, members ...member) []byte {
	t.Helper()
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, m := range members {
		w, err := zw.Create(m.name)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(m.data)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// att is one attachment of a test message, sent base64-encoded.
type att struct {
	name, ctype string
	data        []byte
}

// mixed is a multipart/mixed message: a text part, then the attachments,
// base64 in lines of 76 characters (RFC 2045 §6.8).
func mixed(atts ...att) string {
	var b strings.Builder
	b.WriteString("From: a@sender.test\r\nTo: b@dest.test\r\nSubject: invoice\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"outer\"\r\n\r\nThis is a MIME message.\r\n" +
		"--outer\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nSee attached.\r\n")
	for _, a := range atts {
		b.WriteString(part(a, "outer"))
	}
	b.WriteString("--outer--\r\n")
	return b.String()
}

func part(a att, boundary string) string {
	return "--" + boundary + "\r\nContent-Type: " + a.ctype + "; name=\"" + a.name + "\"\r\n" +
		"Content-Disposition: attachment; filename=\"" + a.name + "\"\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		b64(a.data) + "\r\n"
}

func b64(data []byte) string {
	s := base64.StdEncoding.EncodeToString(data)
	var b strings.Builder
	for len(s) > 76 {
		b.WriteString(s[:76] + "\r\n")
		s = s[76:]
	}
	b.WriteString(s)
	return b.String()
}

func newFilter(t testing.TB, config string) *Filter {
	t.Helper()
	f, err := New(stages.Env{}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatal(err)
	}
	return f.(*Filter)
}

// run passes a whole message through the filter as the pipeline does: the
// header parsed, the body behind it.
func run(t testing.TB, f *Filter, msg string) stages.Verdict {
	t.Helper()
	br := bufio.NewReader(strings.NewReader(msg))
	h, err := stages.ParseHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	var body bytes.Buffer
	body.ReadFrom(br)
	v, err := f.Run(context.Background(), stages.Data, &stages.Transaction{Header: h, Body: stages.BytesBody(body.Bytes())})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if !slices.Contains(Results(), v.Result) {
		t.Fatalf("result %q is not declared in Results()", v.Result)
	}
	return v
}

func expect(t *testing.T, v stages.Verdict, result string, action stages.Action, reason ...string) {
	t.Helper()
	if v.Result != result || v.Action != action {
		t.Fatalf("verdict %s/%s (%s); want %s/%s", v.Result, v.Action, v.Reason, result, action)
	}
	for _, r := range reason {
		if !strings.Contains(v.Reason, r) {
			t.Errorf("reason %q lacks %q", v.Reason, r)
		}
	}
}

// TestExecutableRenamedPDFInZip is the case: a Windows program
// named invoice.pdf inside invoice.zip is refused, and the reason names
// the part, the archive, the member and the real type.
func TestExecutableRenamedPDFInZip(t *testing.T) {
	f := newFilter(t, `{}`)
	z := zipOf(t, member{"readme.txt", []byte("pay now\n")}, member{"invoice.pdf", pe()})
	v := run(t, f, mixed(att{"invoice.zip", "application/zip", z}))
	expect(t, v, "mismatch", stages.Reject, `part 2 "invoice.zip" member "invoice.pdf"`,
		"real type application/vnd.microsoft.portable-executable", "named .pdf")
	if v.Reply == nil || v.Reply.String() != "550 5.7.1 Message refused: attachment type not accepted" {
		t.Errorf("reply %v", v.Reply)
	}
	if strings.Contains(v.Reply.Text, "invoice") || strings.Contains(v.Reply.Text, "executable") {
		t.Errorf("the reply to the sender gives detail away: %q", v.Reply.Text)
	}
	// The type is blocked too; the disguise is the more telling word.
	if !strings.Contains(v.Reason, "also blocked") {
		t.Errorf("reason %q does not say the type is also blocked", v.Reason)
	}

	// The same program attached directly, named .pdf and sent as a PDF.
	v = run(t, f, mixed(att{"invoice.pdf", "application/pdf", pe()}))
	expect(t, v, "mismatch", stages.Reject, `part 2 "invoice.pdf"`, "named .pdf")
}

func TestRealPDFPasses(t *testing.T) {
	f := newFilter(t, `{}`)
	v := run(t, f, mixed(att{"invoice.pdf", "application/pdf", pdf}))
	expect(t, v, "clean", stages.Continue)
	if v.Reply != nil {
		t.Errorf("clean verdict with a reply %v", v.Reply)
	}
	// A PDF and an image in a zip, and a docx (a zip itself): clean.
	z := zipOf(t, member{"docs/invoice.pdf", pdf}, member{"logo.png", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")})
	v = run(t, f, mixed(att{"docs.zip", "application/zip", z}, att{"a.txt", "text/plain", []byte("hello")}))
	expect(t, v, "clean", stages.Continue, "4 files checked")
}

func TestBlocked(t *testing.T) {
	f := newFilter(t, `{}`)
	for _, tc := range []struct {
		name, ctype string
		data        []byte
		reason      string
	}{
		{"update.vbs", "text/plain", []byte("MsgBox \"hi\"\r\n"), "extension .vbs is blocked (real type text/plain)"},
		{"RUN.BAT", "application/octet-stream", []byte("@echo off\r\n"), "extension .bat is blocked"},
		{"tool.exe", "application/x-msdownload", pe(), "extension .exe is blocked (real type application/vnd.microsoft.portable-executable)"},
		// Windows drops trailing dots and spaces: this runs as an .exe.
		{"tool.exe. ", "application/octet-stream", pe(), "extension .exe is blocked"},
		// A program without an extension claims nothing: blocked by type.
		{"tool", "application/octet-stream", pe(), "real type application/vnd.microsoft.portable-executable is blocked"},
		{"app.jar", "application/java-archive", zipOf(t, member{"META-INF/MANIFEST.MF", []byte("Manifest-Version: 1.0\r\n")}), "extension .jar is blocked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := run(t, f, mixed(att{tc.name, tc.ctype, tc.data}))
			expect(t, v, "blocked", stages.Reject, tc.reason)
			if v.Reply == nil || v.Reply.Code != 550 {
				t.Errorf("reply %v", v.Reply)
			}
		})
	}
	// A disk image, found by the descriptor at 32769, named anything.
	iso := make([]byte, 40000)
	copy(iso[0x8001:], "CD001")
	v := run(t, f, mixed(att{"photos.iso", "application/octet-stream", iso}))
	expect(t, v, "blocked", stages.Reject, "extension .iso is blocked (real type application/x-iso9660-image)")
	v = run(t, f, mixed(att{"photos.dat", "application/octet-stream", iso}))
	expect(t, v, "mismatch", stages.Reject, "real type application/x-iso9660-image, named .dat")

	// The lists are the admin's: an empty block list blocks nothing.
	open := newFilter(t, `{"block_extensions": [], "block_types": []}`)
	expect(t, run(t, open, mixed(att{"tool.exe", "application/x-msdownload", pe()})), "clean", stages.Continue)
	png := newFilter(t, `{"block_types": ["image/*"]}`)
	expect(t, run(t, png, mixed(att{"logo.png", "image/png", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")})), "blocked", stages.Reject, "real type image/png is blocked")
}

// TestAllowListWins: an allow-list entry lets a file through whatever the
// block-lists say, but never excuses a disguise.
func TestAllowListWins(t *testing.T) {
	exe := mixed(att{"tool.exe", "application/x-msdownload", pe()})
	for _, config := range []string{
		`{"allow_extensions": [".EXE"]}`,
		`{"allow_types": ["application/vnd.microsoft.portable-executable"]}`,
		`{"allow_types": ["application/*"]}`,
	} {
		expect(t, run(t, newFilter(t, config), exe), "clean", stages.Continue)
	}
	f := newFilter(t, `{"allow_extensions": ["pdf"], "allow_types": ["application/vnd.microsoft.portable-executable"]}`)
	expect(t, run(t, f, mixed(att{"invoice.pdf", "application/pdf", pe()})), "mismatch", stages.Reject, "named .pdf")
	// A real PDF stays clean with a type block-list that names it, once allowed by name.
	f = newFilter(t, `{"block_types": ["application/pdf"], "allow_extensions": ["pdf"]}`)
	expect(t, run(t, f, mixed(att{"invoice.pdf", "application/pdf", pdf})), "clean", stages.Continue)
}

// TestNested: a program deep in the MIME tree, inside an attached message
// inside a nested multipart, is found and its part path given.
func TestNested(t *testing.T) {
	inner := "From: c@x.test\r\nSubject: fwd\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"in\"\r\n\r\n" +
		"--in\r\nContent-Type: text/plain\r\n\r\nhi\r\n" +
		part(att{"scan.pdf", "application/pdf", pe()}, "in") + "--in--\r\n"
	msg := "From: a@sender.test\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"outer\"\r\n\r\n" +
		"--outer\r\nContent-Type: multipart/alternative; boundary=\"alt\"\r\n\r\n" +
		"--alt\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nSee =\r\nattached.\r\n" +
		"--alt\r\nContent-Type: text/html\r\n\r\n<p>See attached.</p>\r\n--alt--\r\n" +
		"--outer\r\nContent-Type: message/rfc822\r\n\r\n" + inner + "\r\n--outer--\r\n"
	expect(t, run(t, newFilter(t, `{}`), msg), "mismatch", stages.Reject, `part 2.2 "scan.pdf": real type application/vnd.microsoft.portable-executable, named .pdf`)

	// A program sent as the text body claims to be text.
	body := "From: a@sender.test\r\nContent-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n" + b64(pe()) + "\r\n"
	expect(t, run(t, newFilter(t, `{}`), body), "mismatch", stages.Reject, "part 1: real type application/vnd.microsoft.portable-executable, sent as text/plain")
	// A text body that starts with "MZ" is text.
	expect(t, run(t, newFilter(t, `{}`), "From: a@sender.test\r\n\r\nMZ Tours: your booking\r\n"), "clean", stages.Continue)
}

func TestMalformed(t *testing.T) {
	f := newFilter(t, `{}`)
	// Cut mid-quantum: 1001 base64 characters, one more than a whole
	// number of 4-character groups.
	truncated := "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n" +
		"Content-Type: application/pdf\r\nContent-Disposition: attachment; filename=invoice.pdf\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString(pe())[:1001] + "\r\n--b--\r\n"
	for _, tc := range []struct {
		name, msg, result string
		reason            []string
	}{
		{"no boundary", "Content-Type: multipart/mixed\r\n\r\n--x\r\n\r\nhi\r\n", "malformed", []string{"multipart without boundary"}},
		{"bad content type", "Content-Type: /;;\r\n\r\nhi\r\n", "malformed", []string{"Content-Type"}},
		{"no closing boundary", "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\nhi\r\n", "malformed", []string{"part 1: multipart: NextPart: EOF"}},
		{"no parts", "Content-Type: multipart/mixed; boundary=b\r\n\r\njust text\r\n", "malformed", []string{"part 1"}},
		{"unknown encoding", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: x-uuencode\r\n\r\nbegin 644 a\r\n", "malformed", []string{"x-uuencode"}},
		{"bad base64", "Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n!!!!\r\n", "malformed", []string{"illegal base64"}},
		// What decoded before the fault is still checked: the program.
		{"truncated base64", truncated, "mismatch", []string{"named .pdf", "also blocked, malformed"}},
		{"broken zip", mixed(att{"a.zip", "application/zip", zipOf(t, member{"a.txt", []byte("x")})[:30]}), "malformed", []string{"zip:"}},
		{"empty", "", "clean", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := run(t, f, tc.msg)
			action := stages.Continue
			if tc.result == "mismatch" {
				action = stages.Reject
			}
			expect(t, v, tc.result, action, tc.reason...)
		})
	}
}

// TestBombs: archives and messages built to cost work give a result with
// bounded work: many members, a member that inflates without end, deep
// nesting, many parts, more bytes than max_bytes.
func TestBombs(t *testing.T) {
	f := newFilter(t, `{}`)
	var many []member
	for i := range 200 {
		many = append(many, member{fmt.Sprintf("f%d.txt", i), []byte("x")})
	}
	many = append(many, member{"last.exe", pe()})
	v := run(t, newFilter(t, `{"max_archive_members": 100}`), mixed(att{"many.zip", "application/zip", zipOf(t, many...)}))
	expect(t, v, "too-complex", stages.Reject, "zip of 201 members, more than max_archive_members 100")
	if v.Reply == nil || v.Reply.Text != "Message refused: attachments could not be checked" {
		t.Errorf("reply %v", v.Reply)
	}

	// A member that inflates to 1 GiB of zeros from 1 MiB, declaring
	// 1 TiB: only its first 4 KiB are inflated.
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	w, err := zw.CreateRaw(&zip.FileHeader{Name: "zeros.pdf", Method: zip.Deflate,
		CompressedSize64: uint64(len(gibOfZeros(t))), UncompressedSize64: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(gibOfZeros(t))
	w, _ = zw.Create("x.pdf")
	w.Write(pe())
	zw.Close()
	expect(t, run(t, f, mixed(att{"bomb.zip", "application/zip", b.Bytes()})), "mismatch", stages.Reject, `member "x.pdf"`)

	deep := "Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
	for i := 1; i <= 30; i++ {
		deep += fmt.Sprintf("--b%d\r\nContent-Type: multipart/mixed; boundary=b%d\r\n\r\n", i-1, i)
	}
	expect(t, run(t, f, deep), "too-complex", stages.Reject, "nested deeper than max_depth 10")

	var wide strings.Builder
	wide.WriteString("Content-Type: multipart/mixed; boundary=b\r\n\r\n")
	for range 600 {
		wide.WriteString("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n")
	}
	wide.WriteString("--b--\r\n")
	expect(t, run(t, f, wide.String()), "too-complex", stages.Reject, "more than max_parts 500 MIME parts")

	small := newFilter(t, `{"max_bytes": "100KiB"}`)
	big := zipOf(t, member{"a.bin", bytes.Repeat([]byte{1, 2, 3, 5, 8, 13, 21}, 30000)})
	expect(t, run(t, small, mixed(att{"big.zip", "application/zip", append(big, make([]byte, 200<<10)...)})), "too-complex", stages.Reject, "more than max_bytes 100KiB")
}

// gibOfZeros is a deflate stream (RFC 1951) of 1 GiB of zeros, made of
// one sync-flushed block of 1 MiB of zeros repeated: a block's back
// references reach only zeros, so the copies chain into one stream.
func gibOfZeros(t testing.TB) []byte {
	var b bytes.Buffer
	fw, _ := flate.NewWriter(&b, flate.BestCompression)
	fw.Write(make([]byte, 1<<20))
	fw.Flush()
	block := bytes.Clone(b.Bytes())
	out := bytes.Repeat(block, 1024)
	return append(out, 0x03, 0x00) // a final, empty fixed-Huffman block
}

func TestEncryptedZip(t *testing.T) {
	var b bytes.Buffer
	zw := zip.NewWriter(&b)
	for _, name := range []string{"secret.docx", "payload.exe"} {
		// Bit 0 of the flags: encrypted (APPNOTE.TXT 4.4.4). The
		// content is then opaque.
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Flags: 0x1, Method: zip.Store, CompressedSize64: 12, UncompressedSize64: 0})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(bytes.Repeat([]byte{0xa5}, 12))
	}
	zw.Close()
	f := newFilter(t, `{}`)
	v := run(t, f, mixed(att{"secret.zip", "application/zip", b.Bytes()}))
	// The name of an encrypted member is still read, and blocked.
	expect(t, v, "blocked", stages.Reject, `member "payload.exe": extension .exe is blocked (content not readable)`, "also encrypted")
	only := newFilter(t, `{"allow_extensions": ["exe"]}`)
	expect(t, run(t, only, mixed(att{"secret.zip", "application/zip", b.Bytes()})), "encrypted", stages.Continue, `member "secret.docx": encrypted`, "(and 1 more)")
}

// rar5 builds a RAR 5 archive of stored files, as the rarlab technote
// for RAR 5.0 lays it out.
func rar5(names []string, encryptHeaders bool) []byte {
	vint := func(v uint64) []byte { return binary.AppendUvarint(nil, v) }
	block := func(fields []byte) []byte {
		h := append(vint(uint64(len(fields))), fields...)
		return append([]byte{0, 0, 0, 0}, h...) // CRC32 not checked by the reader
	}
	out := []byte("Rar!\x1a\x07\x01\x00")
	out = append(out, block(append(vint(1), 0, 0))...) // main header, no flags, archive flags 0
	if encryptHeaders {
		return append(out, block(append(vint(4), 0, 0, 0, 0))...)
	}
	for _, n := range names {
		data := []byte("content of " + n)
		var h []byte
		h = append(h, vint(2)...)                       // file header
		h = append(h, vint(0x02)...)                    // header flags: data area
		h = append(h, vint(uint64(len(data)))...)       // data size
		h = append(h, vint(0x04)...)                    // file flags: CRC32 present
		h = append(h, vint(uint64(len(data)))...)       // unpacked size
		h = append(h, vint(0x20)...)                    // attributes
		h = append(h, 0, 0, 0, 0)                       // CRC32
		h = append(h, vint(0)...)                       // compression: store
		h = append(h, vint(0)...)                       // host OS: Windows
		h = append(h, vint(uint64(len(n)))...)          // name length
		h = append(h, n...)                             //
		out = append(append(out, block(h)...), data...) // header, then data
	}
	return append(out, block(append(vint(5), 0, 0))...) // end of archive
}

// rar4 builds a RAR 4 archive of stored files (technote.txt of RAR 4).
func rar4(names []string) []byte {
	out := []byte("Rar!\x1a\x07\x00")
	out = append(out, 0, 0, 0x73, 0, 0, 13, 0, 0, 0, 0, 0, 0, 0) // MAIN_HEAD
	for _, n := range names {
		data := []byte("content of " + n)
		h := make([]byte, 32)
		h[2] = 0x74
		binary.LittleEndian.PutUint16(h[3:], 0x8000)
		binary.LittleEndian.PutUint16(h[5:], uint16(32+len(n)))
		binary.LittleEndian.PutUint32(h[7:], uint32(len(data)))
		binary.LittleEndian.PutUint32(h[11:], uint32(len(data)))
		h[25] = 0x30 // METHOD: store
		binary.LittleEndian.PutUint16(h[26:], uint16(len(n)))
		out = append(append(append(out, h...), n...), data...)
	}
	return append(out, 0, 0, 0x7b, 0, 0, 7, 0) // ENDARC_HEAD
}

func TestRar(t *testing.T) {
	f := newFilter(t, `{}`)
	for _, tc := range []struct {
		version string
		data    []byte
	}{
		{"5", rar5([]string{"readme.txt", "docs/invoice.js"}, false)},
		{"4", rar4([]string{"readme.txt", "docs/invoice.js"})},
	} {
		v := run(t, f, mixed(att{"docs.rar", "application/vnd.rar", tc.data}))
		expect(t, v, "blocked", stages.Reject, `part 2 "docs.rar" member "docs/invoice.js": extension .js is blocked`)
		clean := map[string][]byte{"5": rar5([]string{"a.txt", "b.pdf"}, false), "4": rar4([]string{"a.txt", "b.pdf"})}[tc.version]
		expect(t, run(t, f, mixed(att{"docs.rar", "application/vnd.rar", clean})), "clean", stages.Continue, "3 files checked")
	}
	v := run(t, f, mixed(att{"secret.rar", "application/vnd.rar", rar5(nil, true)}))
	expect(t, v, "encrypted", stages.Continue, "rar with encrypted content or names")
	// Truncated: the names read before the cut stand.
	cut := rar5([]string{"a.exe", "b.txt"}, false)
	v = run(t, f, mixed(att{"cut.rar", "application/vnd.rar", cut[:len(cut)-20]}))
	expect(t, v, "blocked", stages.Reject, `member "a.exe"`, "also malformed")
}

func TestArchivesOff(t *testing.T) {
	z := zipOf(t, member{"invoice.pdf", pe()})
	expect(t, run(t, newFilter(t, `{"archives": false}`), mixed(att{"invoice.zip", "application/zip", z})), "clean", stages.Continue)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{`{"block_type": ["x/y"]}`, `block_type: unknown key`},
		{`{"block_types": ["exe"]}`, `block_types: unexpected "exe"; expect a media type such as "application/zip" or "image/*"`},
		{`{"allow_types": ["application/"]}`, `allow_types: unexpected "application/"`},
		{`{"block_extensions": ["tar.gz"]}`, `block_extensions: unexpected "tar.gz"; expect an extension such as "exe" or ".exe"`},
		{`{"allow_extensions": [""]}`, `allow_extensions: unexpected ""`},
		{`{"max_depth": -1}`, `max_depth: unexpected -1; expect an integer above 0, or 0 for the default 10`},
		{`{"max_archive_members": -5}`, `max_archive_members: unexpected -5`},
		{`{"max_bytes": 100}`, `max_bytes: unexpected number; expect a size with a unit`},
		{`{"max_bytes": "100"}`, `max_bytes: unexpected "100"; expect a size with a unit`},
		{`{"archives": "yes"}`, `archives: unexpected string; expect true or false`},
	} {
		_, err := New(stages.Env{}, stages.JSONConfig([]byte(tc.config)))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v; want %q", tc.config, err, tc.want)
		}
	}
}

func TestExtension(t *testing.T) {
	for name, want := range map[string]string{
		"a.EXE": "exe", "a.pdf.exe": "exe", "a.exe. ": "exe", "dir/a.js": "js", `dir\a.Js`: "js",
		".bashrc": "", "README": "", "": "", "a.": "", "x.tar.gz": "gz",
	} {
		if got := extension(name); got != want {
			t.Errorf("extension(%q) = %q; want %q", name, got, want)
		}
	}
}

// FuzzWalk: no message makes the walk panic, hang or report an undeclared
// word. The limits are small so each input is cheap.
func FuzzWalk(f *testing.F) {
	f.Add(mixed(att{"invoice.zip", "application/zip", zipOf(f, member{"invoice.pdf", pe()})}))
	f.Add(mixed(att{"a.rar", "application/vnd.rar", rar5([]string{"a.exe"}, false)}, att{"b.rar", "application/vnd.rar", rar4([]string{"b.exe"})}))
	f.Add("Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nContent-Type: text/plain\r\n\r\nhi\r\n--b--\r\n")
	f.Add("Content-Type: text/plain\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nMZ=00=00\r\n")
	filter := newFilter(f, `{"max_depth": 4, "max_parts": 20, "max_archive_members": 20, "max_bytes": "256KiB"}`)
	f.Fuzz(func(t *testing.T, msg string) {
		run(t, filter, msg)
	})
}
