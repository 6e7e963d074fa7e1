package pipeline

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

const (
	// foldAt is the line length header values are folded to where they
	// have white space to fold at (RFC 5322 §2.1.1: SHOULD be no more than
	// 78 characters, excluding the CRLF).
	foldAt = 78
	// maxLine is the hard limit on a header line (RFC 5322 §2.1.1: MUST be
	// no more than 998 characters, excluding the CRLF).
	maxLine = 998
)

// ApplyEdits applies edits to tx in order, as the pipeline does with a
// stage's edits; the dry run and the milter stage reuse it so that an edit
// means the same everywhere.
//
// It applies all the edits or, when one is invalid, none: tx is then left
// as it was and the error names the edit. It never writes into the header
// or recipient slices tx had: it builds new ones, so that a stage still
// reading the old ones (one that outlived its timeout) is never raced.
//
// Header values are folded to keep lines within 78 characters where they
// have white space to fold at; a value that comes folded already is kept
// as it is, provided every line break in it is a fold (CRLF followed by
// white space). A bare CR or LF is refused: it would end the field and
// let a stage inject header fields or a body.
func ApplyEdits(tx *stages.Transaction, edits []stages.Edit) error {
	h := slices.Clone(tx.Header)
	rcpts := slices.Clone(tx.Rcpts)
	from, body := tx.From, tx.Body
	for i, e := range edits {
		var err error
		switch e.Op {
		case stages.HeaderAdd, stages.HeaderInsert:
			var f stages.Field
			if f, err = field(e.Name, e.Value); err != nil {
				break
			}
			if e.Op == stages.HeaderAdd {
				h = append(h, f)
				break
			}
			if e.Index < 0 {
				err = fmt.Errorf("negative index %d", e.Index)
				break
			}
			h = slices.Insert(h, min(e.Index, len(h)), f)
		case stages.HeaderChange:
			h, err = changeField(h, e)
		case stages.HeaderDelete:
			if err = checkName(e.Name); err != nil {
				break
			}
			switch {
			case e.Index < 0:
				err = fmt.Errorf("negative index %d", e.Index)
			case e.Index == 0:
				h = slices.DeleteFunc(h, func(f stages.Field) bool { return strings.EqualFold(f.Name, e.Name) })
			default:
				if k := nth(h, e.Name, e.Index); k >= 0 {
					h = slices.Delete(h, k, k+1)
				}
			}
		case stages.SubjectTag:
			h, err = tagSubject(h, e.Value)
		case stages.RcptAdd:
			var a string
			if a, err = address(e.Value); err == nil && a == "" {
				err = errors.New("empty recipient")
			}
			if err == nil && !slices.ContainsFunc(rcpts, func(r string) bool { return strings.EqualFold(r, a) }) {
				rcpts = append(rcpts, a)
			}
		case stages.RcptDelete:
			var a string
			if a, err = address(e.Value); err == nil {
				rcpts = slices.DeleteFunc(rcpts, func(r string) bool { return strings.EqualFold(r, a) })
			}
		case stages.SenderChange:
			// "" is the null sender <> (RFC 5321 §4.5.5).
			from, err = address(e.Value)
		case stages.BodyReplace:
			body = stages.BytesBody(crlf(e.Body))
		default:
			err = errors.New("unknown operation")
		}
		if err != nil {
			return fmt.Errorf("edit %d (%s %s): %w", i+1, e.Op, e.Name, err)
		}
	}
	tx.Header, tx.Rcpts, tx.From, tx.Body = h, rcpts, from, body
	return nil
}

// changeField sets the Index-th (1-based; 0 counts as 1) field called Name.
// An empty value deletes it; a field that does not exist is added, as
// libmilter's smfi_chgheader does.
func changeField(h stages.Header, e stages.Edit) (stages.Header, error) {
	if e.Index < 0 {
		return h, fmt.Errorf("negative index %d", e.Index)
	}
	k := nth(h, e.Name, max(e.Index, 1))
	if e.Value == "" {
		if err := checkName(e.Name); err != nil {
			return h, err
		}
		if k >= 0 {
			h = slices.Delete(h, k, k+1)
		}
		return h, nil
	}
	f, err := field(e.Name, e.Value)
	if err != nil {
		return h, err
	}
	if k < 0 {
		return append(h, f), nil
	}
	h[k] = f // h is ApplyEdits' own copy
	return h, nil
}

// tagSubject prefixes the first Subject with tag unless it starts with it
// already, and adds a Subject when there is none.
func tagSubject(h stages.Header, tag string) (stages.Header, error) {
	tag = strings.Trim(tag, " \t")
	if tag == "" {
		return h, errors.New("empty tag")
	}
	if err := checkText(tag); err != nil {
		return h, err
	}
	k := nth(h, "Subject", 1)
	if k < 0 {
		return append(h, stages.Field{Name: "Subject", Value: tag}), nil
	}
	raw := h[k].Value
	if strings.HasPrefix(stages.Unfold(raw), tag) {
		return h, nil
	}
	v := tag
	switch {
	case strings.Trim(raw, " \t") == "":
	case strings.Contains(raw, "\r\n"):
		// Keep the sender's folding as it is.
		v = tag + " " + raw
	default:
		v = fold("Subject", tag+" "+strings.Trim(raw, " \t"))
	}
	h[k] = stages.Field{Name: h[k].Name, Value: v} // h is ApplyEdits' own copy
	return h, nil
}

// nth returns the position of the n-th (1-based) field called name, or -1.
func nth(h stages.Header, name string, n int) int {
	for k, f := range h {
		if strings.EqualFold(f.Name, name) {
			if n--; n == 0 {
				return k
			}
		}
	}
	return -1
}

// field returns a header field with a valid name and a folded value.
func field(name, value string) (stages.Field, error) {
	if err := checkName(name); err != nil {
		return stages.Field{}, err
	}
	v := strings.Trim(value, " \t")
	if strings.Contains(v, "\r\n") {
		if err := checkFolded(v); err != nil {
			return stages.Field{}, err
		}
	} else {
		if err := checkText(v); err != nil {
			return stages.Field{}, err
		}
		v = fold(name, v)
	}
	for k, line := range strings.Split(v, "\r\n") {
		if k == 0 {
			line = name + ": " + line
		}
		if len(line) > maxLine {
			return stages.Field{}, fmt.Errorf("line of %d characters; the limit is %d (RFC 5322 §2.1.1)", len(line), maxLine)
		}
	}
	return stages.Field{Name: name, Value: v}, nil
}

// checkName accepts a field name: printable US-ASCII except colon (RFC 5322
// §3.6.8).
func checkName(name string) error {
	if name == "" {
		return errors.New("empty field name")
	}
	for i := 0; i < len(name); i++ {
		if c := name[i]; c < 33 || c > 126 || c == ':' {
			return fmt.Errorf("invalid field name %q", name)
		}
	}
	return nil
}

// checkText accepts one line of header text: no control characters but
// HTAB, so above all no CR or LF.
func checkText(s string) error {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < 32 && c != '\t') || c == 127 {
			return fmt.Errorf("control character %q in %q", c, s)
		}
	}
	return nil
}

// checkFolded accepts a value folded already: every CRLF is followed by
// white space and some text (RFC 5322 §2.2.3; a line of white space only
// is read as the end of the header by some parsers).
func checkFolded(v string) error {
	for k, line := range strings.Split(v, "\r\n") {
		if err := checkText(line); err != nil {
			return err
		}
		if k > 0 && (line == "" || (line[0] != ' ' && line[0] != '\t') || strings.Trim(line, " \t") == "") {
			return fmt.Errorf("line break that is not a fold in %q", v)
		}
	}
	return nil
}

// fold breaks v, the value of field name, into lines of at most foldAt
// characters by inserting CRLF before white space (RFC 5322 §2.2.3). A line
// with no white space to break at stays longer. v is trimmed and has no
// line breaks.
func fold(name, v string) string {
	var b strings.Builder
	used := len(name) + len(": ")
	for used+len(v) > foldAt {
		// Break before the start of a run of white space, so that no
		// line ends up as white space only: the last place that keeps
		// the line within foldAt, else the first place at all.
		cut := -1
		for i := 1; i < len(v); i++ {
			if !isWSP(v[i]) || isWSP(v[i-1]) {
				continue
			}
			if used+i > foldAt {
				if cut < 0 {
					cut = i
				}
				break
			}
			cut = i
		}
		if cut < 0 {
			break
		}
		b.WriteString(v[:cut])
		b.WriteString("\r\n")
		v = v[cut:]
		used = 0
	}
	b.WriteString(v)
	return b.String()
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }

// address checks an envelope address from an edit and strips the angle
// brackets milters tend to send. Brackets inside or control characters
// would let the address smuggle parameters into a later RCPT or MAIL
// command.
func address(s string) (string, error) {
	a := strings.TrimSpace(s)
	if strings.HasPrefix(a, "<") && strings.HasSuffix(a, ">") {
		a = a[1 : len(a)-1]
	}
	if strings.ContainsAny(a, "<>") {
		return "", fmt.Errorf("invalid address %q", s)
	}
	for i := 0; i < len(a); i++ {
		if c := a[i]; c < 32 || c == 127 {
			return "", fmt.Errorf("control character in address %q", s)
		}
	}
	return a, nil
}

// crlf copies a replacement body with every line ending as CRLF, the form
// the body has on the wire and in the spool (RFC 5322 §2.3: CR and LF only
// ever appear together).
func crlf(b []byte) []byte {
	out := make([]byte, 0, len(b)+len(b)/32)
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '\r':
			out = append(out, '\r', '\n')
			if i+1 < len(b) && b[i+1] == '\n' {
				i++
			}
		case '\n':
			out = append(out, '\r', '\n')
		default:
			out = append(out, b[i])
		}
	}
	return out
}
