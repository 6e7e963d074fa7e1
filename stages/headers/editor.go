package headers

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// maxLine is the hard limit on a header line (RFC 5322 §2.1.1: MUST be no
// more than 998 characters, excluding the CRLF).
const maxLine = 998

// editor records edits and applies each to its own copy of the header as
// the pipeline will (gateway/pipeline.ApplyEdits), so that the next step
// sees the header as it will be. It emits only edits the pipeline accepts:
// one that would make an invalid field is skipped and noted, since a
// refused edit fails the whole stage and so the message.
type editor struct {
	h       stages.Header
	edits   []stages.Edit
	step    string   // what is being applied, for skipped
	skipped []string // edits left out, and why
}

func (e *editor) skip(name string, err error) {
	e.skipped = append(e.skipped, fmt.Sprintf("%s: %s: %v", e.step, name, err))
}

// add appends the field name: v.
func (e *editor) add(name, v string) {
	v = strings.Trim(v, " \t")
	if err := checkField(name, v); err != nil {
		e.skip(name, err)
		return
	}
	e.edits = append(e.edits, stages.Edit{Op: stages.HeaderAdd, Name: name, Value: v})
	e.h = append(e.h, stages.Field{Name: name, Value: v})
}

// insertTop puts the field name: v above all others, where trace fields go
// (RFC 5322 §3.6.7).
func (e *editor) insertTop(name, v string) {
	v = strings.Trim(v, " \t")
	if err := checkField(name, v); err != nil {
		e.skip(name, err)
		return
	}
	e.edits = append(e.edits, stages.Edit{Op: stages.HeaderInsert, Name: name, Value: v})
	e.h = slices.Insert(e.h, 0, stages.Field{Name: name, Value: v})
}

// set leaves exactly one field called name, with value v, where the first
// one was (or at the end); an empty v removes every field called name. A
// single field that has the value already is left as it is, byte for byte.
func (e *editor) set(name, v string) {
	v = strings.Trim(v, " \t")
	if v == "" {
		e.removeNames(func(n string) bool { return strings.EqualFold(n, name) })
		return
	}
	pos := e.positions(func(n string) bool { return strings.EqualFold(n, name) })
	if len(pos) == 0 {
		e.add(name, v)
		return
	}
	if len(pos) == 1 && stages.Unfold(e.h[pos[0]].Value) == v {
		return
	}
	if err := checkField(name, v); err != nil {
		e.skip(name, err)
		return
	}
	e.edits = append(e.edits, stages.Edit{Op: stages.HeaderChange, Name: name, Index: 1, Value: v})
	e.h[pos[0]] = stages.Field{Name: name, Value: v}
	// From the last, so that the index of the others stays the same.
	for n := len(pos); n >= 2; n-- {
		e.edits = append(e.edits, stages.Edit{Op: stages.HeaderDelete, Name: name, Index: n})
		e.h = slices.Delete(e.h, pos[n-1], pos[n-1]+1)
	}
}

// removeNames removes every field whose name match accepts.
func (e *editor) removeNames(match func(name string) bool) {
	var names []string
	for _, p := range e.positions(match) {
		n := e.h[p].Name
		if !slices.ContainsFunc(names, func(m string) bool { return strings.EqualFold(m, n) }) {
			names = append(names, n)
		}
	}
	for _, n := range names {
		e.edits = append(e.edits, stages.Edit{Op: stages.HeaderDelete, Name: n})
		e.h = slices.DeleteFunc(e.h, func(f stages.Field) bool { return strings.EqualFold(f.Name, n) })
	}
}

// each calls fn for every field whose name match accepts, last first, so
// that changing or removing one leaves the index of those still to come as
// it was. fn returns whether to change the field, and its new value; an
// empty value removes it.
func (e *editor) each(match func(name string) bool, fn func(stages.Field) (string, bool)) {
	pos := e.positions(match)
	for i := len(pos) - 1; i >= 0; i-- {
		p := pos[i]
		f := e.h[p]
		v, change := fn(f)
		if !change {
			continue
		}
		// The field's index among those of its name, counted from 1
		// as HeaderChange and HeaderDelete count.
		n := 0
		for _, g := range e.h[:p+1] {
			if strings.EqualFold(g.Name, f.Name) {
				n++
			}
		}
		v = strings.Trim(v, " \t")
		if v == "" {
			e.edits = append(e.edits, stages.Edit{Op: stages.HeaderDelete, Name: f.Name, Index: n})
			e.h = slices.Delete(e.h, p, p+1)
			continue
		}
		if err := checkField(f.Name, v); err != nil {
			e.skip(f.Name, err)
			continue
		}
		e.edits = append(e.edits, stages.Edit{Op: stages.HeaderChange, Name: f.Name, Index: n, Value: v})
		e.h[p] = stages.Field{Name: f.Name, Value: v}
	}
}

// positions returns the positions of the fields whose name match accepts.
// Fields whose name an edit cannot name (lines that were not fields, or
// names with bytes outside RFC 5322's) are never touched.
func (e *editor) positions(match func(name string) bool) []int {
	var pos []int
	for p, f := range e.h {
		if checkName(f.Name) == nil && match(f.Name) {
			pos = append(pos, p)
		}
	}
	return pos
}

// checkField accepts what the pipeline accepts as a field (see
// gateway/pipeline.ApplyEdits): a valid name, and a value without control
// characters but HTAB, either folded already (each CRLF followed by white
// space and text) or to be folded at white space, in lines of at most
// maxLine characters.
func checkField(name, v string) error {
	if err := checkName(name); err != nil {
		return err
	}
	v = strings.Trim(v, " \t")
	var lines []string
	if strings.Contains(v, "\r\n") {
		lines = strings.Split(v, "\r\n")
		for k, line := range lines {
			if err := checkText(line); err != nil {
				return err
			}
			if k > 0 && (line == "" || !isWSP(line[0]) || strings.Trim(line, " \t") == "") {
				return errors.New("line break that is not a fold")
			}
		}
	} else {
		if err := checkText(v); err != nil {
			return err
		}
		lines = foldPieces(v)
	}
	for k, line := range lines {
		n := len(line)
		if k == 0 {
			n += len(name) + len(": ")
		}
		if n > maxLine {
			return fmt.Errorf("line of %d characters; the limit is %d (RFC 5322 §2.1.1)", n, maxLine)
		}
	}
	return nil
}

// foldPieces splits v before each run of white space: folding (RFC 5322
// §2.2.3) can break a line there and nowhere else, so no folded line is
// longer than the longest piece unless it is within 78 characters.
func foldPieces(v string) []string {
	var pieces []string
	start := 0
	for i := 1; i < len(v); i++ {
		if isWSP(v[i]) && !isWSP(v[i-1]) {
			pieces = append(pieces, v[start:i])
			start = i
		}
	}
	return append(pieces, v[start:])
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
			return fmt.Errorf("control character %q", c)
		}
	}
	return nil
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }
