package spam

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"io"
	"mime"
	"mime/multipart"
	"mime/quotedprintable"
	"net/textproto"
	"strings"

	"golang.org/x/text/encoding/htmlindex"
	"golang.org/x/text/transform"

	"github.com/mailgate/mailgate/stages"
)

// Bounds of the MIME walk. Everything a sender controls is bounded, so a
// hostile message costs at most this much work whatever its shape.
const (
	maxDepth       = 20       // nesting of multipart and message/rfc822 entities
	maxParts       = 200      // entities visited in one message
	maxRead        = 32 << 20 // raw body bytes read; the rest is not looked at
	maxHeaderBytes = 64 << 10 // decoded bytes kept of the top-level header
	maxURIs        = 500      // distinct URLs kept
	maxURILen      = 2048     // longer URLs are cut to this length
)

// content is what the rules look at: a message decoded and bounded.
type content struct {
	header    []field  // top-level fields, unfolded and RFC 2047-decoded
	allHeader string   // the decoded header, one "Name: value" line per field
	text      string   // decoded text of the text/* parts, HTML reduced to text
	lower     string   // text with its ASCII letters lower-cased
	uris      []string // URLs of the text and of HTML links, each once, in order
	plain     bool     // a text/plain part was seen
	html      bool     // a text/html part was seen
	malformed bool     // the structure or an encoding was broken
}

type field struct {
	name  string
	value string // decoded
	raw   string // unfolded, as received
}

// raw returns the undecoded value of the first field called name, or "".
func (c *content) raw(name string) string {
	for _, f := range c.header {
		if strings.EqualFold(f.name, name) {
			return f.raw
		}
	}
	return ""
}

// values returns the decoded values of every field called name.
func (c *content) values(name string) []string {
	var vs []string
	for _, f := range c.header {
		if strings.EqualFold(f.name, name) {
			vs = append(vs, f.value)
		}
	}
	return vs
}

// extract decodes a message for the rules: the header fields and, from body,
// at most maxText bytes of decoded text. It never fails: what cannot be
// decoded is left out and marks the content malformed.
func extract(h stages.Header, body io.Reader, maxText int) *content {
	c := &content{}
	top := textproto.MIMEHeader{}
	kept := 0
	for _, f := range h {
		if f.Name == "" {
			c.malformed = true // a line that is neither a field nor a continuation
			continue
		}
		raw := stages.Unfold(f.Value)
		top.Add(f.Name, raw)
		v := decodeHeader(raw)
		if kept+len(f.Name)+len(v)+len(raw) > maxHeaderBytes {
			continue
		}
		kept += len(f.Name) + len(v) + len(raw)
		c.header = append(c.header, field{f.Name, v, raw})
	}
	var all strings.Builder
	for _, f := range c.header {
		all.WriteString(f.name + ": " + f.value + "\n")
	}
	c.allHeader = all.String()
	w := &walker{c: c, left: maxText, seen: map[string]bool{}}
	if body != nil {
		w.entity(top, io.LimitReader(body, maxRead), 0, "text/plain")
	}
	c.text, c.lower = w.text.String(), w.lower.String()
	return c
}

// decodeHeader decodes RFC 2047 encoded-words in an unfolded value. A value
// that does not decode (an unknown charset, a broken word) is kept as it is.
func decodeHeader(v string) string {
	if strings.Contains(v, "=?") {
		d := mime.WordDecoder{CharsetReader: charsetReader}
		if s, err := d.DecodeHeader(v); err == nil {
			v = s
		}
	}
	return strings.ToValidUTF8(v, "\uFFFD")
}

// charsetReader converts from any charset the WHATWG encoding standard
// knows (which covers what mail clients send, with its usual aliases).
func charsetReader(charset string, r io.Reader) (io.Reader, error) {
	enc, err := htmlindex.Get(charset)
	if err != nil {
		return nil, err
	}
	return transform.NewReader(r, enc.NewDecoder()), nil
}

// walker collects the text of a MIME tree.
type walker struct {
	c     *content
	text  strings.Builder
	lower strings.Builder // text, ASCII lower-cased
	left  int             // decoded text bytes still to read
	parts int
	seen  map[string]bool // URLs already in c.uris
}

// done reports whether walking further can find nothing more to scan.
func (w *walker) done() bool { return w.left <= 0 || w.parts >= maxParts }

// entity handles one MIME entity. defType is its Content-Type when it has
// none: text/plain, or message/rfc822 inside multipart/digest (RFC 2046
// §5.1.5).
func (w *walker) entity(h textproto.MIMEHeader, body io.Reader, depth int, defType string) {
	if w.done() {
		return
	}
	w.parts++
	if depth > maxDepth {
		w.c.malformed = true
		return
	}
	mt, params := mediaType(h.Get("Content-Type"), defType)
	if params == nil {
		w.c.malformed = true
	}
	switch {
	case strings.HasPrefix(mt, "multipart/"):
		boundary := param(h.Get("Content-Type"), params, "boundary")
		if boundary == "" {
			w.c.malformed = true
			return
		}
		child := "text/plain"
		if mt == "multipart/digest" {
			child = "message/rfc822"
		}
		mr := multipart.NewReader(body, boundary)
		for !w.done() {
			p, err := mr.NextRawPart()
			if err == io.EOF {
				return
			}
			if err != nil {
				w.c.malformed = true
				return
			}
			w.entity(p.Header, p, depth+1, child)
		}
	case mt == "message/rfc822" || mt == "message/global":
		br := bufio.NewReader(w.transferDecoder(h, body))
		inner, err := textproto.NewReader(br).ReadMIMEHeader()
		if err != nil {
			w.c.malformed = true
			return
		}
		w.entity(inner, br, depth+1, "text/plain")
	case strings.HasPrefix(mt, "text/"):
		w.textPart(h, body, mt, param(h.Get("Content-Type"), params, "charset"))
	}
}

// mediaType parses a Content-Type value. An absent value is defType; one
// that does not parse is text/plain (RFC 2045 §5.2). params is nil when the
// value was broken.
func mediaType(v, defType string) (string, map[string]string) {
	if strings.TrimSpace(v) == "" {
		return defType, map[string]string{}
	}
	mt, params, err := mime.ParseMediaType(v)
	if err != nil {
		if mt == "" {
			mt = "text/plain"
		}
		return mt, nil
	}
	return mt, params
}

// param returns a Content-Type parameter. When the value did not parse
// (params is nil), it digs the parameter out loosely, as mail readers do, so
// a stray character cannot hide a multipart body from the scan.
func param(v string, params map[string]string, name string) string {
	if params != nil {
		return params[name]
	}
	// Lower-case ASCII only: strings.ToLower changes the length of invalid
	// UTF-8, and the offsets found in lower must hold in v.
	lower := []byte(v)
	for i, c := range lower {
		if 'A' <= c && c <= 'Z' {
			lower[i] = c + 'a' - 'A'
		}
	}
	for i := 0; ; {
		j := bytes.Index(lower[i:], []byte(name))
		if j < 0 {
			return ""
		}
		i += j + len(name)
		rest := strings.TrimLeft(v[i:], " \t")
		if !strings.HasPrefix(rest, "=") {
			continue
		}
		rest = strings.TrimLeft(rest[1:], " \t")
		if q, ok := strings.CutPrefix(rest, `"`); ok {
			val, _, _ := strings.Cut(q, `"`)
			return val
		}
		end := strings.IndexAny(rest, "; \t")
		if end < 0 {
			return rest
		}
		return rest[:end]
	}
}

// textPart reads a text/* entity as UTF-8 text, up to the text budget.
func (w *walker) textPart(h textproto.MIMEHeader, body io.Reader, mt, charset string) {
	r := w.transferDecoder(h, body)
	switch strings.ToLower(charset) {
	case "", "us-ascii", "utf-8", "utf8":
	default:
		if cr, err := charsetReader(charset, r); err == nil {
			r = cr
		}
	}
	data, err := io.ReadAll(io.LimitReader(r, int64(w.left)))
	if err != nil {
		w.c.malformed = true
	}
	w.left -= len(data)
	s := strings.ReplaceAll(strings.ToValidUTF8(string(data), "\uFFFD"), "\r\n", "\n")
	if mt == "text/html" {
		w.c.html = true
		s = htmlText(s, w.addURI)
	} else if mt == "text/plain" {
		w.c.plain = true
	}
	lower := lowerASCII(s)
	for _, u := range findURIs(s, lower) {
		w.addURI(u)
	}
	w.text.WriteString(s)
	w.text.WriteByte('\n')
	w.lower.WriteString(lower)
	w.lower.WriteByte('\n')
}

// transferDecoder undoes the Content-Transfer-Encoding (RFC 2045 §6).
// Unknown encodings are read as they are.
func (w *walker) transferDecoder(h textproto.MIMEHeader, body io.Reader) io.Reader {
	switch strings.ToLower(strings.TrimSpace(h.Get("Content-Transfer-Encoding"))) {
	case "base64":
		return base64.NewDecoder(base64.StdEncoding, base64Filter{body})
	case "quoted-printable":
		return quotedprintable.NewReader(body)
	}
	return body
}

// base64Filter drops every byte outside the base64 alphabet, which RFC 2045
// §6.8 says a decoder must ignore (line breaks, spaces, stray junk).
type base64Filter struct{ r io.Reader }

func (f base64Filter) Read(p []byte) (int, error) {
	for {
		n, err := f.r.Read(p)
		j := 0
		for _, b := range p[:n] {
			if b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '=' {
				p[j] = b
				j++
			}
		}
		if j > 0 || err != nil || n == 0 {
			return j, err
		}
	}
}

func (w *walker) addURI(u string) {
	if len(w.c.uris) >= maxURIs {
		return
	}
	if len(u) > maxURILen {
		u = u[:maxURILen]
	}
	if !w.seen[u] {
		w.seen[u] = true
		w.c.uris = append(w.c.uris, u)
	}
}
