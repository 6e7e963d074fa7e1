package stages

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// ApplyEdits applies edits to tx in order, as the pipeline does with a
// stage's edits. It is part of the contract, not of the engine, so that an
// edit means the same everywhere: the pipeline, the dry run, the milter
// stage, and a plugin author's test of their own edits.
//
// It applies all the edits or, when one is invalid, none: tx is then left
// as it was and the error names the edit. It never writes into the header
// or recipient slices tx had: it builds new ones, so that a stage still
// reading the old ones (one that outlived its timeout) is never raced.
//
// Header fields are made with NewField and addresses checked with
// EnvelopeAddress, the rules a stage can check its edits against:
// values are folded to keep lines within 78 characters, a value folded
// already is kept, and a bare CR or LF is refused, since it would end the
// field and let a stage inject header fields or a body.
func ApplyEdits(tx *Transaction, edits []Edit) error {
	h := slices.Clone(tx.Header)
	rcpts := slices.Clone(tx.Rcpts)
	from, body := tx.From, tx.Body
	for i, e := range edits {
		var err error
		switch e.Op {
		case HeaderAdd, HeaderInsert:
			var f Field
			if f, err = NewField(e.Name, e.Value); err != nil {
				break
			}
			if e.Op == HeaderAdd {
				h = append(h, f)
				break
			}
			if e.Index < 0 {
				err = fmt.Errorf("negative index %d", e.Index)
				break
			}
			h = slices.Insert(h, min(e.Index, len(h)), f)
		case HeaderChange:
			h, err = changeField(h, e)
		case HeaderDelete:
			if err = CheckFieldName(e.Name); err != nil {
				break
			}
			switch {
			case e.Index < 0:
				err = fmt.Errorf("negative index %d", e.Index)
			case e.Index == 0:
				h = slices.DeleteFunc(h, func(f Field) bool { return strings.EqualFold(f.Name, e.Name) })
			default:
				if k := nth(h, e.Name, e.Index); k >= 0 {
					h = slices.Delete(h, k, k+1)
				}
			}
		case SubjectTag:
			h, err = tagSubject(h, e.Value)
		case RcptAdd:
			var a string
			if a, err = EnvelopeAddress(e.Value); err == nil && a == "" {
				err = errors.New("empty recipient")
			}
			if err == nil && !slices.ContainsFunc(rcpts, func(r string) bool { return address.Equal(r, a) }) {
				rcpts = append(rcpts, a)
			}
		case RcptDelete:
			var a string
			if a, err = EnvelopeAddress(e.Value); err == nil {
				rcpts = slices.DeleteFunc(rcpts, func(r string) bool { return address.Equal(r, a) })
			}
		case SenderChange:
			// "" is the null sender <> (RFC 5321 §4.5.5).
			from, err = EnvelopeAddress(e.Value)
		case BodyReplace:
			body = BytesBody(CRLF(e.Body))
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
func changeField(h Header, e Edit) (Header, error) {
	if e.Index < 0 {
		return h, fmt.Errorf("negative index %d", e.Index)
	}
	k := nth(h, e.Name, max(e.Index, 1))
	if e.Value == "" {
		if err := CheckFieldName(e.Name); err != nil {
			return h, err
		}
		if k >= 0 {
			h = slices.Delete(h, k, k+1)
		}
		return h, nil
	}
	f, err := NewField(e.Name, e.Value)
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
func tagSubject(h Header, tag string) (Header, error) {
	tag = strings.Trim(tag, " \t")
	if tag == "" {
		return h, errors.New("empty tag")
	}
	if err := CheckFieldText(tag); err != nil {
		return h, err
	}
	k := nth(h, "Subject", 1)
	if k < 0 {
		return append(h, Field{Name: "Subject", Value: tag}), nil
	}
	raw := h[k].Value
	if strings.HasPrefix(Unfold(raw), tag) {
		return h, nil
	}
	v := tag
	switch {
	case strings.Trim(raw, " \t") == "":
	case strings.Contains(raw, "\r\n"):
		// Keep the sender's folding as it is.
		v = tag + " " + raw
	default:
		v = Fold("Subject", tag+" "+strings.Trim(raw, " \t"))
	}
	h[k] = Field{Name: h[k].Name, Value: v} // h is ApplyEdits' own copy
	return h, nil
}

// nth returns the position of the n-th (1-based) field called name, or -1.
func nth(h Header, name string, n int) int {
	for k, f := range h {
		if strings.EqualFold(f.Name, name) {
			if n--; n == 0 {
				return k
			}
		}
	}
	return -1
}
