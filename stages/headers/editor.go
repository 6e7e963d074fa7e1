package headers

import (
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// editor records edits and applies each to its own copy of the header as
// the pipeline will (stages.ApplyEdits), so that the next step
// sees the header as it will be. It emits only edits the pipeline accepts,
// checking each field with stages.NewField as the pipeline does: one that
// would make an invalid field is skipped and noted, since a refused edit
// fails the whole stage and so the message.
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
	if _, err := stages.NewField(name, v); err != nil {
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
	if _, err := stages.NewField(name, v); err != nil {
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
	if _, err := stages.NewField(name, v); err != nil {
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
		if _, err := stages.NewField(f.Name, v); err != nil {
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
		if stages.CheckFieldName(f.Name) == nil && match(f.Name) {
			pos = append(pos, p)
		}
	}
	return pos
}
