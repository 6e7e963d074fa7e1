package smtp

import (
	"bytes"
	"errors"
	"io"
)

var ErrTooLongLine = errors.New("smtp: too long a line in input stream")

// lineLimitReader reads from the underlying Reader but restricts
// line length of lines in input stream to a certain length.
//
// If line length exceeds the limit - Read returns ErrTooLongLine
type lineLimitReader struct {
	R         io.Reader
	LineLimit int

	curLineLength int
}

func (r *lineLimitReader) Read(b []byte) (int, error) {
	if r.curLineLength > r.LineLimit && r.LineLimit > 0 {
		return 0, ErrTooLongLine
	}

	n, err := r.R.Read(b)
	if err != nil {
		return n, err
	}

	if r.LineLimit == 0 {
		return n, nil
	}

	// mailgate patch 7 (bulk-data): the line ends are found with
	// bytes.IndexByte instead of a loop over every byte. As before, a
	// line's length counts its bytes up to and including the LF that
	// ends the line before it.
	for p := b[:n]; ; {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			r.curLineLength += len(p)
			break
		}
		if r.curLineLength+i > r.LineLimit {
			r.curLineLength += i // past the limit: the error sticks
			return 0, ErrTooLongLine
		}
		r.curLineLength = 1
		p = p[i+1:]
	}
	if r.curLineLength > r.LineLimit {
		return 0, ErrTooLongLine
	}

	return n, nil
}
