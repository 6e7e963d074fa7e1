package filetype

import (
	"bufio"
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// errStop ends the walk at a limit; what was found until then stands.
var errStop = errors.New("limit reached")

// header is what the walk needs of stages.Header and textproto.MIMEHeader
// alike.
type header interface {
	Get(key string) string
}

// walker is one walk of one message. Its counters are the limits' bounds
// on work: parts entered, decoded bytes read.
type walker struct {
	f     *Filter
	ctx   context.Context
	found map[string]*finding // by result word
	parts int
	bytes int64
	files int
}

// note records a finding; the first of each word gives the reason.
func (w *walker) note(word, format string, args ...any) {
	if fd := w.found[word]; fd != nil {
		fd.more++
		return
	}
	w.found[word] = &finding{reason: fmt.Sprintf(format, args...)}
}

// message walks a whole message: the header the stage got and the body.
func (w *walker) message(h stages.Header, body stages.Body) error {
	var r io.Reader = strings.NewReader("")
	if body != nil {
		rc, err := body.Open()
		if err != nil {
			return fmt.Errorf("open body: %w", err)
		}
		defer rc.Close()
		r = rc
	}
	err := w.entity(h, r, 0, "")
	if err := w.ctx.Err(); err != nil {
		return context.Cause(w.ctx)
	}
	if errors.Is(err, errStop) {
		return nil
	}
	return err
}

// entity looks at one MIME entity (RFC 2045) and what it contains. path
// numbers parts from 1 as IMAP does (RFC 3501 §6.4.5): "1.2" is the
// second part of the first; a message that is not multipart is part "1".
func (w *walker) entity(h header, r io.Reader, depth int, path string) error {
	if err := w.ctx.Err(); err != nil {
		return err
	}
	if w.parts++; w.parts > w.f.maxParts {
		w.note("too-complex", "more than max_parts %d MIME parts", w.f.maxParts)
		return errStop
	}
	if depth > w.f.maxDepth {
		w.note("too-complex", "part %s: nested deeper than max_depth %d", label(path), w.f.maxDepth)
		return errStop
	}
	// RFC 2045 §5.2: no Content-Type, or one that cannot be read, means
	// text/plain. A bad parameter still leaves the type.
	ct := h.Get("Content-Type")
	mediaType, params, err := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		mediaType = "text/plain"
	case err != nil && !errors.Is(err, mime.ErrInvalidMediaParameter):
		w.note("malformed", "part %s: Content-Type %q: %v", label(path), ct, err)
		mediaType, ct = "text/plain", ""
	}
	switch {
	case strings.HasPrefix(mediaType, "multipart/"):
		// RFC 2046 §5.1: the boundary is required. RFC 2045 §6.4: a
		// multipart entity is never encoded as a whole.
		return w.multipart(r, params["boundary"], depth, path)
	case mediaType == "message/rfc822" || mediaType == "message/global":
		br := bufio.NewReader(w.decode(h, r, path))
		inner, err := stages.ParseHeader(br)
		if err != nil {
			w.note("malformed", "part %s: attached message: %v", label(path), err)
			return nil
		}
		return w.entity(inner, br, depth+1, path)
	}
	if ct == "" {
		mediaType = "" // the sender claimed no type
	}
	return w.leaf(h, r, mediaType, path)
}

func (w *walker) multipart(r io.Reader, boundary string, depth int, path string) error {
	if boundary == "" {
		w.note("malformed", "part %s: multipart without boundary", label(path))
		return nil
	}
	mr := multipart.NewReader(r, boundary)
	for i := 1; ; i++ {
		// NextRawPart: the transfer encoding is the walk's to undo, for
		// quoted-printable as for base64.
		p, err := mr.NextRawPart()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			w.note("malformed", "part %s: %v", label(path), err)
			return nil
		}
		if err := w.entity(p.Header, p, depth+1, child(path, i)); err != nil {
			return err
		}
	}
}

// leaf checks one part that holds content. A part is a file when it has a
// name, is an attachment, or is not text; a file is checked against the
// lists. Every part, a file or a body text, is checked for a mismatch: a
// program sent as text/plain hides as well as one named .pdf.
func (w *walker) leaf(h header, r io.Reader, claimed, path string) error {
	name := fileName(h)
	disp, _, _ := mime.ParseMediaType(h.Get("Content-Disposition"))
	isFile := name != "" || strings.EqualFold(disp, "attachment") || (claimed != "" && !strings.HasPrefix(claimed, "text/"))
	where := label(path)
	if name != "" {
		where += fmt.Sprintf(" %q", name)
	}

	room := w.f.maxBytes - w.bytes
	if room <= 0 {
		w.note("too-complex", "part %s: more than max_bytes %s of decoded content", where, stages.Size(w.f.maxBytes))
		return errStop
	}
	dec := w.decode(h, r, path)
	head := make([]byte, min(headLen, room))
	n, err := io.ReadFull(dec, head)
	w.bytes += int64(n)
	head = head[:n]
	complete := err == io.EOF || err == io.ErrUnexpectedEOF
	if err != nil && !complete {
		// Truncated or corrupt base64 and the like: what decoded before
		// the fault is still checked.
		w.note("malformed", "part %s: %v", where, err)
	}
	t := detect(head)
	if isFile {
		w.files++
		w.check(where, name, claimed, t)
	} else if mm := mismatch(t, "", claimed); mm != "" {
		w.note("mismatch", "part %s: real type %s, %s", where, t, mm)
	}

	if !w.f.archives || !(t.is("application/zip") || t.is("application/vnd.rar")) || (err != nil && !complete) {
		return nil
	}
	data := head
	if !complete {
		rest, err := io.ReadAll(io.LimitReader(dec, room-int64(n)+1))
		w.bytes += int64(len(rest))
		if int64(n+len(rest)) > room {
			w.note("too-complex", "part %s: archive not looked into: more than max_bytes %s of decoded content", where, stages.Size(w.f.maxBytes))
			return errStop
		}
		if err != nil {
			w.note("malformed", "part %s: %v", where, err)
			return nil
		}
		data = append(head, rest...)
	}
	if t.is("application/zip") {
		w.zip(where, data)
	} else {
		w.rar(where, data)
	}
	return nil
}

// check applies the lists and the mismatch test to one file. ext is taken
// from name; claimed is the Content-Type the sender gave, "" for none.
// Allow-lists win over block-lists, never over a mismatch: allowing .pdf
// does not let a program named .pdf through.
func (w *walker) check(where, name, claimed string, t fileType) {
	ext := extension(name)
	if mm := mismatch(t, ext, claimed); mm != "" {
		w.note("mismatch", "part %s: real type %s, %s", where, t, mm)
	}
	if (ext != "" && w.f.allowExts[ext]) || matchAny(t, w.f.allowTypes) {
		return
	}
	switch {
	case ext != "" && w.f.blockExts[ext]:
		w.note("blocked", "part %s: extension .%s is blocked (real type %s)", where, ext, t)
	case matchAny(t, w.f.blockTypes):
		w.note("blocked", "part %s: real type %s is blocked", where, t)
	}
}

// checkName applies the extension lists to a file whose content could not
// be read (a member of a rar or an encrypted zip).
func (w *walker) checkName(where, name string) {
	ext := extension(name)
	if ext == "" || w.f.allowExts[ext] || !w.f.blockExts[ext] {
		return
	}
	w.note("blocked", "part %s: extension .%s is blocked (content not readable)", where, ext)
}

func matchAny(t fileType, patterns []string) bool {
	for _, p := range patterns {
		if t.is(p) {
			return true
		}
	}
	return false
}

// decode undoes the Content-Transfer-Encoding (RFC 2045 §6). The base64
// decoder skips the line breaks of mail; 7bit, 8bit and binary are the
// identity. An unknown encoding is noted and the content read as it is.
func (w *walker) decode(h header, r io.Reader, path string) io.Reader {
	switch cte := strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))); cte {
	case "base64":
		return truncation{base64.NewDecoder(base64.StdEncoding, r)}
	case "quoted-printable":
		return quotedprintable.NewReader(r)
	case "", "7bit", "8bit", "binary":
		return r
	default:
		w.note("malformed", "part %s: unknown Content-Transfer-Encoding %q", label(path), cte)
		return r
	}
}

// truncation tells a base64 text cut mid-group, which the decoder reports
// as io.ErrUnexpectedEOF, from the end of a short part, which io.ReadFull
// reports with the same error.
type truncation struct{ r io.Reader }

var errTruncated = errors.New("base64 content cut short (truncated)")

func (t truncation) Read(p []byte) (int, error) {
	n, err := t.r.Read(p)
	if err == io.ErrUnexpectedEOF {
		err = errTruncated
	}
	return n, err
}

// fileName is the part's file name from Content-Disposition (RFC 2183,
// RFC 2231 encoding undone by mime.ParseMediaType) or the older
// Content-Type name parameter, with RFC 2047 encoded-words decoded.
func fileName(h header) string {
	name := ""
	if _, params, err := mime.ParseMediaType(h.Get("Content-Disposition")); err == nil || errors.Is(err, mime.ErrInvalidMediaParameter) {
		name = params["filename"]
	}
	if name == "" {
		if _, params, err := mime.ParseMediaType(h.Get("Content-Type")); err == nil || errors.Is(err, mime.ErrInvalidMediaParameter) {
			name = params["name"]
		}
	}
	if dec, err := new(mime.WordDecoder).DecodeHeader(name); err == nil {
		name = dec
	}
	return name
}

func label(path string) string {
	if path == "" {
		return "1"
	}
	return path
}

func child(path string, i int) string {
	if path == "" {
		return fmt.Sprint(i)
	}
	return fmt.Sprintf("%s.%d", path, i)
}
