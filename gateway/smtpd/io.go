package smtpd

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
)

// The I/O adapters between the message as read (DATA, BDAT, a dry run's
// bytes), the spool file and the stages.

// readError says what a failed read of the message means: the reply
// that refuses it and why, or a nil reply when the client went away and
// no reply would reach it.
func readError(err error) (*smtp.SMTPError, string) {
	var se *smtp.SMTPError
	var ne net.Error
	switch {
	case errors.As(err, &se): // size limit from go-smtp's reader: 552 5.3.4
		return se, err.Error()
	case errors.Is(err, errBareLineEnd):
		return errBareLF, "bare CR or LF"
	case errors.Is(err, smtp.ErrTooLongLine):
		return errLineTooLong, "line longer than max_line_length"
	case errors.As(err, &ne) && ne.Timeout():
		// go-smtp writes the 421, then closes the connection.
		return errDataTimeout, "data timeout"
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed), errors.Is(err, smtp.ErrDataReset):
		return nil, "client went away during DATA"
	}
	return nil, err.Error()
}

// spoolWriter marks write errors as the spool's, so they are told apart
// from read errors, which are the client's.
type spoolWriter struct{ w io.Writer }

func (s spoolWriter) Write(p []byte) (int, error) {
	n, err := s.w.Write(p)
	if err != nil {
		err = spoolWriteError{err}
	}
	return n, err
}

type spoolWriteError struct{ err error }

func (e spoolWriteError) Error() string { return "spool write: " + e.err.Error() }
func (e spoolWriteError) Unwrap() error { return e.err }

type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// maxHeaderSize bounds the header block of a message, which stages get
// parsed in memory: a message without a blank line is all header.
const maxHeaderSize = 1 << 20

var errHeaderTooLarge = errors.New("header block larger than 1 MiB")

// dataBuffers are what a message is read through, pooled by the Driver.
// Allocated afresh (and zeroed) per message, they were about 128 KiB and
// a tenth of the gateway's CPU on 5 KiB messages.
type dataBuffers struct {
	copy    []byte        // the copy into the spool
	lineEnd *bufio.Reader // under the line-end check
	header  *bufio.Reader // reading the header back from the spool
}

func newDataBuffers() *dataBuffers {
	return &dataBuffers{copy: make([]byte, 32<<10), lineEnd: bufio.NewReaderSize(nil, 32<<10), header: bufio.NewReaderSize(nil, 64<<10)}
}

// lineEndReader is a lineEndReader over r through the kept buffer.
func (b *dataBuffers) lineEndReader(r io.Reader, reject bool) *lineEndReader {
	b.lineEnd.Reset(r)
	return &lineEndReader{r: b.lineEnd, reject: reject}
}

// readMessage parses the header of what was spooled and points tx.Body at
// the rest of the file, so stages read the body without a copy. br is
// the buffer to read through; what it held before is dropped.
func readMessage(tx *stages.Transaction, w *spool.Writer, br *bufio.Reader) error {
	f, err := w.Open()
	if err != nil {
		return err
	}
	defer f.Close()
	cr := &countingReader{r: f}
	br.Reset(cr)
	defer br.Reset(nil) // let go of the file
	h, err := stages.ParseHeader(&headerReader{br: br, left: maxHeaderSize})
	if err != nil {
		return fmt.Errorf("parse header: %w", err)
	}
	offset := cr.n - int64(br.Buffered())
	tx.Header = h
	tx.Body = &spoolBody{path: w.Path(), offset: offset, size: w.Size() - offset}
	return nil
}

// headerReader gives ParseHeader at most left more bytes, then
// errHeaderTooLarge; a line is read in pieces, so even a single line of
// the whole message costs no more than the limit.
type headerReader struct {
	br   *bufio.Reader
	left int
}

func (h *headerReader) ReadString(delim byte) (string, error) {
	var line []byte
	for {
		piece, err := h.br.ReadSlice(delim)
		if len(piece) > h.left {
			return "", errHeaderTooLarge
		}
		h.left -= len(piece)
		line = append(line, piece...)
		if err != bufio.ErrBufferFull {
			return string(line), err
		}
	}
}

func (h *headerReader) Read(p []byte) (int, error) {
	if h.left == 0 {
		return 0, errHeaderTooLarge
	}
	n, err := h.br.Read(p[:min(len(p), h.left)])
	h.left -= n
	return n, err
}

// rewrite replaces the spooled message with the edited header and body.
func rewrite(tx *stages.Transaction, w *spool.Writer) error {
	return w.Rewrite(func(_ io.Reader, dst io.Writer) error {
		if _, err := tx.Header.WriteTo(dst); err != nil {
			return err
		}
		if tx.Body == nil {
			return nil
		}
		body, err := tx.Body.Open()
		if err != nil {
			return err
		}
		defer body.Close()
		_, err = io.Copy(dst, body)
		return err
	})
}

// spoolBody is the body of a spooled message: a region of its file. It
// implements stages.Body, and File lets the plugin host pass the file to a
// plugin process instead of the bytes.
type spoolBody struct {
	path   string
	offset int64
	size   int64
}

func (b *spoolBody) Size() int64 { return b.size }

func (b *spoolBody) File() (string, int64) { return b.path, b.offset }

func (b *spoolBody) Open() (io.ReadCloser, error) {
	f, err := os.Open(b.path)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.NewSectionReader(f, b.offset, b.size), f}, nil
}

// errBareLineEnd is returned by the line-end reader in reject mode.
var errBareLineEnd = errors.New("bare CR or LF in message")

// lineEndReader reads DATA (already dot-unstuffed by go-smtp, which ends DATA
// only at CRLF.CRLF) and makes every line end a CRLF, so that what the gateway
// spools and later relays contains no bare CR or LF: the defence against SMTP
// smuggling (CVE-2023-51766 and friends) on the outbound side.
//
// In normalize mode (the default, as Postfix 3.9's
// smtpd_forbid_bare_newline=normalize) a bare LF becomes CRLF — clients that
// write Unix line ends keep their line structure — and a bare CR becomes a
// space (as Postfix's cleanup_replace_stray_cr_lf). A "\n.\n" therefore never
// ends the message: it becomes a line holding a single dot inside the body,
// which is dot-stuffed again on relay. In reject mode any bare CR or LF fails
// the message with errBareLineEnd after it has been read to its end.
type lineEndReader struct {
	r         *bufio.Reader
	reject    bool
	bad       bool // a bare CR or LF was seen
	pendingCR bool // the last piece ended in CR; the next byte decides what it was
	out       []byte
	buf       []byte
	err       error // came with the last bytes; returned without reading again
}

func (l *lineEndReader) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		chunk, err := l.next()
		if len(chunk) > 0 {
			l.out = l.fix(chunk)
			continue
		}
		if err == io.EOF && l.pendingCR {
			l.pendingCR, l.bad = false, true
			l.out = []byte(" ")
			continue
		}
		if err == io.EOF && l.bad && l.reject {
			return 0, errBareLineEnd
		}
		if err != nil {
			return 0, err
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// next reads the next piece, up to LF or a full buffer. An error that
// comes with the last bytes is kept and returned by the next call without
// reading again: a second read would wait out data_timeout a second time.
func (l *lineEndReader) next() ([]byte, error) {
	if l.err != nil {
		return nil, l.err
	}
	chunk, err := l.r.ReadSlice('\n')
	switch {
	case err == bufio.ErrBufferFull:
		err = nil
	case err != nil && len(chunk) > 0:
		l.err, err = err, nil
	}
	return chunk, err
}

// fix rewrites one piece read up to LF (or a buffer-full piece of a long
// line). A CR that ends a piece is held back until the next byte shows
// whether it was the first half of a CRLF.
func (l *lineEndReader) fix(chunk []byte) []byte {
	if !l.pendingCR && isClean(chunk) {
		return chunk
	}
	b := l.buf[:0]
	if l.pendingCR {
		l.pendingCR = false
		if chunk[0] == '\n' {
			b = append(b, '\r')
		} else {
			l.bad = true
			b = append(b, l.strayCR())
		}
	}
	for i, c := range chunk {
		switch {
		case c == '\n' && (i == 0 && len(b) == 0 || i > 0 && chunk[i-1] != '\r'):
			l.bad = true
			if !l.reject {
				b = append(b, '\r')
			}
			b = append(b, '\n')
		case c == '\r' && i == len(chunk)-1:
			l.pendingCR = true
		case c == '\r' && chunk[i+1] != '\n':
			l.bad = true
			b = append(b, l.strayCR())
		default:
			b = append(b, c)
		}
	}
	l.buf = b
	return b
}

// strayCR is what a CR that is not part of CRLF becomes.
func (l *lineEndReader) strayCR() byte {
	if l.reject {
		return '\r'
	}
	return ' '
}

// isClean reports whether every CR and LF in chunk is part of a CRLF and the
// chunk does not end in CR. It runs on every line of every message, so it
// scans with IndexByte and Count (vector instructions), not byte by byte:
// a quarter of the time on a 76-byte line. Every LF follows a CR, and
// there are no more CRs than LFs: so no CR stands elsewhere.
func isClean(chunk []byte) bool {
	lf := 0
	for i := 0; ; i++ {
		j := bytes.IndexByte(chunk[i:], '\n')
		if j < 0 {
			break
		}
		i += j
		if i == 0 || chunk[i-1] != '\r' {
			return false
		}
		lf++
	}
	return bytes.Count(chunk, []byte{'\r'}) == lf
}
