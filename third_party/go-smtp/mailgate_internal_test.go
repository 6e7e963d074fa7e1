package smtp

// Tests and benchmarks of mailgate patches 7 and 8 (PATCHES.md), which
// made the DATA paths bulk: the server's dataReader and lineLimitReader
// must do what the byte-at-a-time code before them did, and the client's
// dot writer what net/textproto's does, on any input. The benchmarks run
// a 100 KiB message of 72-byte lines with some dot-stuffed ones.

import (
	"bufio"
	"bytes"
	"io"
	"net/textproto"
	"strings"
	"testing"
)

func benchMessage() []byte {
	var b bytes.Buffer
	b.WriteString("Subject: bench\r\n\r\n")
	for i := 0; b.Len() < 100<<10; i++ {
		if i%50 == 0 {
			b.WriteString(".a line that starts with a dot and is stuffed on the wire\r\n")
			continue
		}
		b.WriteString("Please find below the figures we discussed on Tuesday, with the notes\r\n")
	}
	return b.Bytes()
}

// dotStuffed is msg as it travels: dot-stuffed, ended by CRLF.CRLF.
func dotStuffed(msg []byte) []byte {
	var b bytes.Buffer
	w := textproto.NewWriter(bufio.NewWriter(&b))
	dw := w.DotWriter()
	dw.Write(msg)
	dw.Close()
	return b.Bytes()
}

func BenchmarkDataReader(b *testing.B) {
	msg := benchMessage()
	wire := dotStuffed(msg)
	rd := bytes.NewReader(wire)
	br := bufio.NewReaderSize(rd, 4096)
	buf := make([]byte, 32<<10)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		rd.Reset(wire)
		br.Reset(rd)
		r := &dataReader{r: br}
		n := 0
		for {
			m, err := r.Read(buf)
			n += m
			if err == io.EOF {
				break
			}
			if err != nil {
				b.Fatal(err)
			}
		}
		if n != len(msg) {
			b.Fatalf("read %d bytes, want %d", n, len(msg))
		}
	}
}

func BenchmarkDotWriter(b *testing.B) {
	msg := benchMessage()
	bw := bufio.NewWriterSize(io.Discard, 4096)
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		c := &Client{text: textproto.NewConn(struct {
			io.Reader
			io.Writer
			io.Closer
		}{strings.NewReader(""), bw, io.NopCloser(nil)})}
		w := c.dataWriter()
		for p := msg; len(p) > 0; {
			n := 32 << 10
			if n > len(p) {
				n = len(p)
			}
			if _, err := w.Write(p[:n]); err != nil {
				b.Fatal(err)
			}
			p = p[n:]
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// byteDataReader is dataReader.Read before patch 7 (with patch 4), the
// reference the bulk one is held to.
type byteDataReader struct {
	r     *bufio.Reader
	state int
}

func (r *byteDataReader) Read(b []byte) (n int, err error) {
	const (
		stateBeginLine = iota
		stateDot
		stateDotCR
		stateCR
		stateData
		stateEOF
	)
	for n < len(b) && r.state != stateEOF {
		var c byte
		c, err = r.r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			break
		}
		switch r.state {
		case stateBeginLine:
			if c == '.' {
				r.state = stateDot
				continue
			}
			if c == '\r' {
				r.state = stateCR
				break
			}
			r.state = stateData
		case stateDot:
			if c == '\r' {
				r.state = stateDotCR
				continue
			}
			r.state = stateData
		case stateDotCR:
			if c == '\n' {
				r.state = stateEOF
				continue
			}
			r.r.UnreadByte()
			c = '\r'
			r.state = stateData
		case stateCR:
			if c == '\n' {
				r.state = stateBeginLine
				break
			}
			r.state = stateData
		case stateData:
			if c == '\r' {
				r.state = stateCR
			}
		}
		b[n] = c
		n++
	}
	if err == nil && r.state == stateEOF {
		err = io.EOF
	}
	return
}

// readAll reads r with reads of the sizes in sizes (cycled) and returns
// the bytes, the error that ended it, and what the bufio.Reader has left
// for the next command.
func readAll(r io.Reader, br *bufio.Reader, sizes []byte) ([]byte, error, []byte) {
	var out []byte
	for i := 0; ; i++ {
		buf := make([]byte, int(sizes[i%len(sizes)])%64+1)
		n, err := r.Read(buf)
		out = append(out, buf[:n]...)
		if err != nil {
			rest, _ := io.ReadAll(br)
			return out, err, rest
		}
	}
}

func FuzzDataReader(f *testing.F) {
	f.Add([]byte("Subject: a\r\n\r\nbody\r\n..dot\r\n.\r\nQUIT\r\n"), []byte{7, 3}, byte(16))
	f.Add([]byte("a\r\n.\rX\r\n.\r\r\n.\n.\r\n"), []byte{1}, byte(16))
	f.Add([]byte("no end\r\nline\rbare\nlf"), []byte{63, 2}, byte(16))
	f.Fuzz(func(t *testing.T, wire, sizes []byte, bufSize byte) {
		if len(sizes) == 0 {
			sizes = []byte{31}
		}
		size := int(bufSize)%64 + 16 // bufio's minimum is 16
		br1 := bufio.NewReaderSize(bytes.NewReader(wire), size)
		br2 := bufio.NewReaderSize(bytes.NewReader(wire), size)
		got, gotErr, gotRest := readAll(&dataReader{r: br1}, br1, sizes)
		want, wantErr, wantRest := readAll(&byteDataReader{r: br2}, br2, sizes)
		if !bytes.Equal(got, want) || gotErr != wantErr || !bytes.Equal(gotRest, wantRest) {
			t.Fatalf("dataReader(%q) = %q, %v, rest %q; want %q, %v, rest %q", wire, got, gotErr, gotRest, want, wantErr, wantRest)
		}
	})
}

func FuzzLineLimitReader(f *testing.F) {
	f.Add([]byte("12345\n1234\n123456\n"), []byte{3}, byte(5))
	f.Add([]byte("\n\n\nabc"), []byte{1, 2}, byte(1))
	f.Fuzz(func(t *testing.T, in, sizes []byte, limit byte) {
		if len(sizes) == 0 {
			sizes = []byte{31}
		}
		lim := int(limit)%16 + 1
		// The reference: the loop over every byte from before patch 7.
		cur, wantN, wantErr := 0, 0, error(nil)
		var wantOut []byte
		for i := 0; wantErr == nil && wantN < len(in); i++ {
			chunk := in[wantN:]
			if k := int(sizes[i%len(sizes)])%64 + 1; k < len(chunk) {
				chunk = chunk[:k]
			}
			if cur > lim {
				wantErr = ErrTooLongLine
				break
			}
			for _, c := range chunk {
				if c == '\n' {
					cur = 0
				}
				cur++
				if cur > lim {
					wantErr = ErrTooLongLine
					break
				}
			}
			if wantErr == nil {
				wantOut = append(wantOut, chunk...)
				wantN += len(chunk)
			}
		}
		r := &lineLimitReader{R: bytes.NewReader(in), LineLimit: lim}
		var gotOut []byte
		var gotErr error
		for i := 0; ; i++ {
			buf := make([]byte, int(sizes[i%len(sizes)])%64+1)
			n, err := r.Read(buf)
			gotOut = append(gotOut, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				gotErr = err
				break
			}
		}
		if gotErr != nil {
			// The connection is broken: the error sticks.
			if _, err := r.Read(make([]byte, 1)); err != gotErr {
				t.Fatalf("lineLimitReader(%q, %d): read after %v: %v", in, lim, gotErr, err)
			}
		}
		if !bytes.Equal(gotOut, wantOut) || gotErr != wantErr {
			t.Fatalf("lineLimitReader(%q, %d) = %q, %v; want %q, %v", in, lim, gotOut, gotErr, wantOut, wantErr)
		}
	})
}

func FuzzDotWriter(f *testing.F) {
	f.Add([]byte(".dot\r\nbare\nlf\n.\n\r\n"), []byte{3, 1})
	f.Add([]byte("no final line end"), []byte{5})
	f.Add([]byte("cr at the end\r"), []byte{13, 1})
	f.Add([]byte(""), []byte{1})
	f.Fuzz(func(t *testing.T, msg, sizes []byte) {
		if bytes.Contains(msg, []byte("\r\r")) {
			t.Skip("CR CR: textproto adds a CR, this does not (PATCHES.md, patch 8)")
		}
		if len(sizes) == 0 {
			sizes = []byte{31}
		}
		write := func(w io.WriteCloser) {
			for i, p := 0, msg; len(p) > 0; i++ {
				k := int(sizes[i%len(sizes)])%64 + 1
				if k > len(p) {
					k = len(p)
				}
				if n, err := w.Write(p[:k]); n != k || err != nil {
					t.Fatalf("Write = %d, %v", n, err)
				}
				p = p[k:]
			}
			if err := w.Close(); err != nil {
				t.Fatal(err)
			}
		}
		var got, want bytes.Buffer
		bw := bufio.NewWriterSize(&got, 16)
		write(&dotWriter{w: bw})
		write(textproto.NewWriter(bufio.NewWriterSize(&want, 16)).DotWriter())
		if !bytes.Equal(got.Bytes(), want.Bytes()) {
			t.Fatalf("dotWriter(%q) wrote %q; textproto writes %q", msg, got.Bytes(), want.Bytes())
		}
	})
}
