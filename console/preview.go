package console

import (
	"bufio"
	"errors"
	"io"
	"strings"
	"unicode"

	"github.com/emersion/go-message"
	_ "github.com/emersion/go-message/charset" // the charsets of the world, for bodies and encoded words

	"github.com/mailgate/mailgate/stages/htmltext"
)

// Bounds of a preview: a quarantined message is hostile, and its shape is
// the sender's choice.
const (
	maxPreviewText  = 256 << 10 // characters of text shown
	maxPreviewParts = 200       // MIME parts looked at
	maxHeaderRead   = 64 << 10  // bytes of header read for a list's subjects
)

// Field is one header field of a message, its value decoded (RFC 2047).
type Field struct{ Name, Value string }

// Attachment is a part of a message that is not shown.
type Attachment struct {
	Name, Type string
	Size       int64
}

// Preview is what the console shows of a message: its header, its text,
// and what else it carries. Nothing of it is ever given to the browser
// as markup: html/template writes it as text, and an HTML body is
// reduced to its text first, links written out, images not loaded.
type Preview struct {
	Header      []Field
	Subject     string
	Text        string
	FromHTML    bool // the text was made from an HTML part
	Attachments []Attachment
	Truncated   bool
	Problem     string // the message does not parse as MIME: shown raw
}

// readPreview reads a message for showing.
func readPreview(r io.Reader) Preview {
	var p Preview
	br := bufio.NewReader(r)
	e, err := message.Read(br)
	if e == nil {
		// Not even a header: show the start of the bytes as they are.
		b, _ := io.ReadAll(io.LimitReader(br, maxPreviewText))
		return Preview{Problem: "not a message: " + err.Error(), Text: strings.ToValidUTF8(string(b), "\uFFFD")}
	}
	if err != nil && !message.IsUnknownCharset(err) && !message.IsUnknownEncoding(err) {
		p.Problem = err.Error()
	}
	fields := e.Header.Fields()
	for fields.Next() {
		v, err := fields.Text()
		if err != nil {
			v = fields.Value()
		}
		p.Header = append(p.Header, Field{Name: fields.Key(), Value: clean(v)})
	}
	p.Subject = headerText(e.Header, "Subject")
	var plain, fromHTML strings.Builder
	parts := 0
	err = e.Walk(func(_ []int, part *message.Entity, err error) error {
		if parts++; parts > maxPreviewParts {
			p.Truncated = true
			return errStop
		}
		if err != nil && !message.IsUnknownCharset(err) {
			p.Problem = err.Error()
			return nil
		}
		typ, params, _ := part.Header.ContentType()
		disp, dparams, _ := part.Header.ContentDisposition()
		if strings.HasPrefix(typ, "multipart/") {
			return nil
		}
		name := dparams["filename"]
		if name == "" {
			name = params["name"]
		}
		if typ == "" {
			typ = "text/plain"
		}
		if disp != "attachment" && name == "" && (typ == "text/plain" || typ == "text/html") {
			dst := &plain
			if typ == "text/html" {
				dst = &fromHTML
			}
			left := maxPreviewText - dst.Len()
			if left <= 0 {
				p.Truncated = true
				return nil
			}
			b, _ := io.ReadAll(io.LimitReader(part.Body, int64(left)+1))
			if len(b) > left {
				b, p.Truncated = b[:left], true
			}
			text := string(b)
			if typ == "text/html" {
				// Reduced to text, each link's address written out:
				// none of its markup reaches the page.
				text = htmltext.Text(text, htmltext.Options{Targets: true})
			}
			dst.WriteString(clean(text) + "\n")
			return nil
		}
		n, _ := io.Copy(io.Discard, io.LimitReader(part.Body, 64<<20))
		p.Attachments = append(p.Attachments, Attachment{Name: clean(name), Type: typ, Size: n})
		return nil
	})
	if err != nil && !errors.Is(err, errStop) && p.Problem == "" {
		p.Problem = err.Error()
	}
	p.Text = plain.String()
	if strings.TrimSpace(p.Text) == "" && fromHTML.Len() > 0 {
		p.Text, p.FromHTML = fromHTML.String(), true
	}
	return p
}

var errStop = errors.New("stop")

func headerText(h message.Header, key string) string {
	v, err := h.Text(key)
	if err != nil {
		v = h.Get(key)
	}
	return clean(v)
}

// readSubject reads the Subject of a message from its header only.
func readSubject(r io.Reader) string {
	e, err := message.Read(io.LimitReader(r, maxHeaderRead))
	if e == nil && err != nil {
		return ""
	}
	return headerText(e.Header, "Subject")
}

// clean makes text safe to show as text: valid UTF-8, without control
// characters other than line breaks and tabs (a terminal escape or a
// bidirectional override could make a line read other than it is).
func clean(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if !strings.ContainsFunc(s, hidden) {
		return s
	}
	return strings.Map(func(r rune) rune {
		if hidden(r) {
			return '\uFFFD'
		}
		return r
	}, s)
}

func hidden(r rune) bool {
	switch {
	case r == '\n' || r == '\t' || r == '\r':
		return false
	case unicode.IsControl(r):
		return true
	case r >= 0x202A && r <= 0x202E, r >= 0x2066 && r <= 0x2069: // bidirectional overrides and isolates
		return true
	}
	return false
}
