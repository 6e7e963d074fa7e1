package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/mail"
	"strings"

	"github.com/mailgate/mailgate/plugins/sdk"
	"github.com/mailgate/mailgate/stages"
)

// Config is the [stage.config] block.
type Config struct {
	// Reply is the text of the 550 5.7.1 reply of a rejection. It reaches
	// the sender, so it says nothing of the gateway.
	Reply string `json:"reply"`
	// AllowExtensions lets through executables whose file name ends in one
	// of these extensions (".exe", "msi"), compared without case.
	AllowExtensions []string `json:"allow_extensions"`
	// Scripts also counts a part starting with "#!" as an executable.
	Scripts bool `json:"scripts"`
	// MaxDepth and MaxParts bound the MIME walk (multipart and attached
	// messages). A message beyond them is treated as if it carried an
	// executable, so nesting cannot hide one.
	MaxDepth int `json:"max_depth"`
	MaxParts int `json:"max_parts"`
	// Action chose the action for a find before [stage.results] did; it
	// is refused with the mapping to write there instead.
	Action *string `json:"action"`
}

const (
	defaultReply = "Message refused: executable attachments are not accepted"
	// sniffLen is how much of a part's decoded content is looked at; the
	// rest of the part is skipped without being decoded.
	sniffLen = 512
)

// Filter is one configured exeblock stage.
type Filter struct {
	cfg   Config
	allow []string // lower case, with the leading dot
}

var _ stages.Filter = (*Filter)(nil)

// New builds the filter from its config block.
func New(_ stages.Env, c stages.Config) (stages.Filter, error) {
	cfg := Config{Reply: defaultReply, MaxDepth: 20, MaxParts: 1000}
	if err := c.Decode(&cfg); err != nil {
		return nil, err
	}
	if cfg.Action != nil {
		return nil, stages.ReplacedByResults("action", map[string]string{"executable": *cfg.Action, "too-complex": *cfg.Action})
	}
	f := &Filter{cfg: cfg}
	if cfg.Reply == "" || strings.ContainsAny(cfg.Reply, "\r\n") {
		return nil, &sdk.ConfigError{Key: "reply", Err: errors.New("expect one non-empty line of text")}
	}
	if cfg.MaxDepth < 1 {
		return nil, &sdk.ConfigError{Key: "max_depth", Err: errors.New("expect a number above 0")}
	}
	if cfg.MaxParts < 1 {
		return nil, &sdk.ConfigError{Key: "max_parts", Err: errors.New("expect a number above 0")}
	}
	for _, ext := range cfg.AllowExtensions {
		ext = strings.ToLower(strings.TrimPrefix(ext, "."))
		if ext == "" {
			return nil, &sdk.ConfigError{Key: "allow_extensions", Err: errors.New("empty extension")}
		}
		f.allow = append(f.allow, "."+ext)
	}
	return f, nil
}

// Info says exeblock reads the whole message at the end of DATA.
func (f *Filter) Info() stages.Info {
	return stages.Info{
		Kind:    "exeblock",
		Version: "1.0.0",
		Phases:  stages.Data,
		Needs:   stages.NeedHeader | stages.NeedBody,
		Results: []string{"executable", "too-complex", "malformed", "clean"},
	}
}

// Run walks the message's MIME tree. Results: "executable" and
// "too-complex" (beyond max_depth or max_parts), both rejected unless
// [stage.results] maps them to another action; "malformed" (MIME it could
// not read all of, nothing found in the rest) and "clean", both continue.
func (f *Filter) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if tx.Body == nil {
		return stages.Verdict{Action: stages.Continue, Result: "clean"}, nil
	}
	body, err := tx.Body.Open()
	if err != nil {
		return stages.Verdict{}, fmt.Errorf("open body: %w", err)
	}
	defer body.Close()
	w := &walker{f: f, ctx: ctx}
	found, err := w.walk(tx.Header, body, 0, "")
	switch {
	case ctx.Err() != nil:
		return stages.Verdict{}, ctx.Err()
	case errors.Is(err, errTooComplex):
		return f.hit("too-complex", err.Error()), nil
	case err != nil:
		return stages.Verdict{}, err
	case found != nil:
		return f.hit("executable", found.String()), nil
	case w.malformed != "":
		return stages.Verdict{Action: stages.Continue, Result: "malformed", Reason: w.malformed}, nil
	}
	return stages.Verdict{Action: stages.Continue, Result: "clean"}, nil
}

// hit is the verdict of a find: reject, with the configured reply, which
// also serves when [stage.results] maps the result to tempfail.
func (f *Filter) hit(result, reason string) stages.Verdict {
	// RFC 3463 §3.8: 5.7.1, delivery not authorized, message refused.
	return stages.Verdict{Action: stages.Reject, Result: result, Reason: reason,
		Reply: &stages.Reply{Code: 550, Enhanced: [3]int{5, 7, 1}, Text: f.cfg.Reply}}
}

var errTooComplex = errors.New("too complex")

// finding is an executable part.
type finding struct {
	path, name, kind string
}

func (f *finding) String() string {
	return fmt.Sprintf("part %s (file name %q) is a %s executable", f.path, f.name, f.kind)
}

// header is what the walk needs of stages.Header, textproto.MIMEHeader and
// mail.Header alike.
type header interface {
	Get(key string) string
}

type walker struct {
	f         *Filter
	ctx       context.Context
	parts     int
	malformed string // the first problem met, for the reason
}

func (w *walker) bad(path string, err error) {
	if path == "" {
		path = "1"
	}
	if w.malformed == "" {
		w.malformed = fmt.Sprintf("part %s: %v", path, err)
	}
}

// walk looks at one MIME entity (RFC 2045) and what it contains. path
// numbers parts from 1 the way IMAP does: "1.2" is the second part of the
// first; a message that is not multipart is part "1".
func (w *walker) walk(h header, r io.Reader, depth int, path string) (*finding, error) {
	if err := w.ctx.Err(); err != nil {
		return nil, err
	}
	if w.parts++; w.parts > w.f.cfg.MaxParts {
		return nil, fmt.Errorf("%w: more than %d parts", errTooComplex, w.f.cfg.MaxParts)
	}
	if depth > w.f.cfg.MaxDepth {
		return nil, fmt.Errorf("%w: nested deeper than %d", errTooComplex, w.f.cfg.MaxDepth)
	}
	// RFC 2045 §5.2: no or an unreadable Content-Type means text/plain.
	// That only decides whether to look inside; every leaf is sniffed.
	mediaType, params, err := mime.ParseMediaType(h.Get("Content-Type"))
	if err != nil {
		mediaType = "text/plain"
	}
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		// RFC 2045 §6.4: a multipart entity is never encoded as a whole.
		return w.multipart(r, params["boundary"], depth, path)
	case mediaType == "message/rfc822" || mediaType == "message/global":
		m, err := mail.ReadMessage(decode(r, h))
		if err != nil {
			w.bad(path, err)
			return nil, nil
		}
		return w.walk(m.Header, m.Body, depth+1, path)
	}
	head := make([]byte, sniffLen)
	n, err := io.ReadFull(decode(r, h), head)
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		w.bad(path, err)
	}
	kind := w.f.sniff(head[:n])
	if kind == "" {
		return nil, nil
	}
	name := fileName(h)
	if w.f.allowed(name) {
		return nil, nil
	}
	if path == "" {
		path = "1"
	}
	return &finding{path: path, name: name, kind: kind}, nil
}

func child(path string, i int) string {
	if path == "" {
		return fmt.Sprint(i)
	}
	return fmt.Sprintf("%s.%d", path, i)
}

func (w *walker) multipart(r io.Reader, boundary string, depth int, path string) (*finding, error) {
	if boundary == "" {
		w.bad(path, errors.New("multipart without boundary"))
		return nil, nil
	}
	mr := multipart.NewReader(r, boundary)
	for i := 1; ; i++ {
		// NextRawPart: the transfer encoding is ours to undo, for
		// quoted-printable as for base64.
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return nil, nil
		}
		if err != nil {
			w.bad(path, err)
			return nil, nil
		}
		found, err := w.walk(p.Header, p, depth+1, child(path, i))
		if found != nil || err != nil {
			return found, err
		}
	}
}

// decode undoes the Content-Transfer-Encoding (RFC 2045 §6). The base64
// decoder skips the line breaks of mail.
func decode(r io.Reader, h header) io.Reader {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, r)
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	}
	return r
}

// sniff names the executable format of a part's first bytes, or "".
func (f *Filter) sniff(b []byte) string {
	switch {
	case len(b) >= 64 && b[0] == 'M' && b[1] == 'Z':
		// The DOS header is 64 bytes; its last field points to the PE
		// header of a Windows program.
		if off := binary.LittleEndian.Uint32(b[0x3c:]); int(off)+4 <= len(b) && bytes.Equal(b[off:off+4], []byte("PE\x00\x00")) {
			return "Windows PE"
		}
		return "MZ (DOS/Windows)"
	case bytes.HasPrefix(b, []byte("\x7fELF")):
		return "ELF"
	case len(b) >= 4 && isMachO(binary.BigEndian.Uint32(b)):
		return "Mach-O"
	case len(b) >= 8 && binary.BigEndian.Uint32(b) == 0xcafebabe && binary.BigEndian.Uint32(b[4:]) < 20:
		// A universal (fat) Mach-O binary counts its architectures here;
		// a Java class file, with the same magic, has its version (45 and
		// up), as file(1) tells them apart.
		return "Mach-O universal"
	case f.cfg.Scripts && bytes.HasPrefix(b, []byte("#!")):
		return "script"
	}
	return ""
}

func isMachO(magic uint32) bool {
	switch magic {
	case 0xfeedface, 0xfeedfacf, 0xcefaedfe, 0xcffaedfe:
		return true
	}
	return false
}

// fileName is the part's file name from Content-Disposition (RFC 2183) or
// the older Content-Type name parameter; mime.ParseMediaType undoes RFC
// 2231 encoding, the word decoder RFC 2047 encoded-words.
func fileName(h header) string {
	name := ""
	if _, params, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil {
		name = params["filename"]
	}
	if name == "" {
		if _, params, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil {
			name = params["name"]
		}
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
		name = dec
	}
	return name
}

func (f *Filter) allowed(name string) bool {
	name = strings.ToLower(name)
	for _, ext := range f.allow {
		if strings.HasSuffix(name, ext) {
			return true
		}
	}
	return false
}
