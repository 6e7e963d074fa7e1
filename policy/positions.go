package policy

import (
	"sort"
	"strconv"
	"strings"

	"github.com/BurntSushi/toml"
)

// positions maps the keys of a TOML file to the lines they are written on.
// Keys are dotted, with array elements numbered from 0 and segments quoted
// as toml.Key quotes them: "stage.1.config.address", "server.listen.0".
//
// BurntSushi/toml keeps the positions it knows to itself, so the loader scans
// the source a second time. The scan runs only on input the TOML parser has
// accepted, so it can be lenient: it never fails, at worst it misses a key
// and the error names the file without a line.
type positions map[string]int

// line returns the line of key, or of its closest enclosing table when key
// itself is not written in the file (a required key that is missing is
// reported at its table). It returns 0 when nothing is known.
func (p positions) line(key string) int {
	for key != "" {
		if n, ok := p[key]; ok {
			return n
		}
		i := strings.LastIndexByte(key, '.')
		if i < 0 {
			break
		}
		key = key[:i]
	}
	return 0
}

// scanPositions builds the position index of a TOML document.
func scanPositions(src string) positions {
	s := &scanner{
		src:    src,
		pos:    positions{},
		arrays: map[string]int{},
	}
	for i := 0; i < len(src); i++ {
		if src[i] == '\n' {
			s.lineStarts = append(s.lineStarts, i+1)
		}
	}
	s.document()
	return s.pos
}

type scanner struct {
	src        string
	i          int
	lineStarts []int // offsets of the lines after the first
	pos        positions
	// arrays counts the elements of each array of tables ([[stage]]) seen
	// so far, by resolved path; the last one is the one headers extend.
	arrays map[string]int
	table  string // resolved path of the current [table] or [[array]] element
}

// line returns the 1-based line of byte offset off.
func (s *scanner) line(off int) int {
	return sort.SearchInts(s.lineStarts, off+1) + 1
}

func (s *scanner) mark(key string, off int) {
	if _, ok := s.pos[key]; !ok {
		s.pos[key] = s.line(off)
	}
}

func (s *scanner) peek(n int) byte {
	if s.i+n < len(s.src) {
		return s.src[s.i+n]
	}
	return 0
}

// space skips blanks; with newlines, also line breaks and comments.
func (s *scanner) space(newlines bool) {
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case ' ', '\t':
			s.i++
		case '\r', '\n':
			if !newlines {
				return
			}
			s.i++
		case '#':
			if !newlines {
				return
			}
			for s.i < len(s.src) && s.src[s.i] != '\n' {
				s.i++
			}
		default:
			return
		}
	}
}

func (s *scanner) document() {
	for {
		s.space(true)
		if s.i >= len(s.src) {
			return
		}
		start := s.i
		if s.src[s.i] == '[' {
			s.header()
		} else {
			s.keyValue(s.table)
		}
		if s.i == start { // not TOML after all; never loop forever
			s.i++
		}
	}
}

// header reads [table] or [[array]] and makes it the current table.
func (s *scanner) header() {
	off := s.i
	array := s.peek(1) == '['
	s.i++
	if array {
		s.i++
	}
	s.space(false)
	keys := s.key()
	s.space(false)
	// The rest of the line is "]" or "]]" and maybe a comment.
	if n := strings.IndexByte(s.src[s.i:], '\n'); n >= 0 {
		s.i += n
	} else {
		s.i = len(s.src)
	}
	if len(keys) == 0 {
		return
	}
	path := s.resolve(keys[:len(keys)-1], off)
	path = join(path, quote(keys[len(keys)-1]))
	if array {
		n := s.arrays[path]
		s.arrays[path] = n + 1
		s.mark(path, off) // the array as a whole: its first element
		path += "." + strconv.Itoa(n)
	}
	s.mark(path, off)
	s.table = path
}

// resolve turns the keys of a header into a path, descending into the last
// element of every array of tables on the way, and marks the tables it
// defines implicitly.
func (s *scanner) resolve(keys []string, off int) string {
	path := ""
	for _, k := range keys {
		path = join(path, quote(k))
		s.mark(path, off)
		if n, ok := s.arrays[path]; ok {
			path += "." + strconv.Itoa(n-1)
		}
	}
	return path
}

// keyValue reads key = value inside table.
func (s *scanner) keyValue(table string) {
	off := s.i
	keys := s.key()
	if len(keys) == 0 {
		return
	}
	path := table
	for _, k := range keys {
		path = join(path, quote(k))
		s.mark(path, off)
	}
	s.space(false)
	if s.peek(0) != '=' {
		return
	}
	s.i++
	s.space(false)
	s.value(path)
}

// key reads a possibly dotted key and returns its segments.
func (s *scanner) key() []string {
	var keys []string
	for s.i < len(s.src) {
		k, ok := s.simpleKey()
		if !ok {
			break
		}
		keys = append(keys, k)
		s.space(false)
		if s.peek(0) != '.' {
			break
		}
		s.i++
		s.space(false)
	}
	return keys
}

func (s *scanner) simpleKey() (string, bool) {
	switch c := s.peek(0); {
	case c == '"':
		start := s.i
		s.basicString()
		raw := s.src[start:s.i]
		if len(raw) >= 2 {
			raw = raw[1 : len(raw)-1]
		}
		return unescape(raw), true
	case c == '\'':
		start := s.i + 1
		end := strings.IndexByte(s.src[start:], '\'')
		if end < 0 {
			s.i = len(s.src)
			return s.src[start:], true
		}
		s.i = start + end + 1
		return s.src[start : start+end], true
	case isBare(c):
		start := s.i
		for s.i < len(s.src) && isBare(s.src[s.i]) {
			s.i++
		}
		return s.src[start:s.i], true
	}
	return "", false
}

func isBare(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-'
}

// value skips one value, marking the elements of arrays and the keys of
// inline tables under path.
func (s *scanner) value(path string) {
	switch s.peek(0) {
	case '"':
		if strings.HasPrefix(s.src[s.i:], `"""`) {
			s.multiline(`"`)
		} else {
			s.basicString()
		}
	case '\'':
		if strings.HasPrefix(s.src[s.i:], "'''") {
			s.multiline("'")
		} else if end := strings.IndexByte(s.src[s.i+1:], '\''); end >= 0 {
			s.i += end + 2
		} else {
			s.i = len(s.src)
		}
	case '[':
		s.items(']', func(n int) {
			elem := path + "." + strconv.Itoa(n)
			s.mark(elem, s.i)
			s.value(elem)
		})
	case '{':
		s.items('}', func(int) { s.keyValue(path) })
	default: // number, boolean or date: up to whatever ends a value
		for s.i < len(s.src) && !strings.ContainsRune(",]}\r\n#", rune(s.src[s.i])) {
			s.i++
		}
	}
}

// items skips the comma-separated items of an array or an inline table,
// from its opening bracket past the closing one, calling item at the start
// of each with its number. An item that consumes nothing is skipped a byte
// at a time, so a malformed one cannot stall the scan.
func (s *scanner) items(closing byte, item func(n int)) {
	s.i++
	for n := 0; ; n++ {
		s.space(true)
		if s.i >= len(s.src) || s.src[s.i] == closing {
			break
		}
		start := s.i
		item(n)
		s.space(true)
		if s.peek(0) == ',' {
			s.i++
		} else if s.i == start {
			s.i++
		}
	}
	s.i++
}

// basicString skips a "string" with escapes.
func (s *scanner) basicString() {
	s.i++
	for s.i < len(s.src) {
		switch s.src[s.i] {
		case '\\':
			s.i += 2
			continue
		case '"':
			s.i++
			return
		case '\n':
			return
		}
		s.i++
	}
}

// multiline skips a multi-line string; q is its quote character.
func (s *scanner) multiline(q string) {
	delim := q + q + q
	s.i += 3
	for s.i < len(s.src) {
		if q == `"` && s.src[s.i] == '\\' {
			s.i += 2
			continue
		}
		if strings.HasPrefix(s.src[s.i:], delim) {
			s.i += 3
			// Up to two quotes may sit just before the closing delimiter.
			for n := 0; n < 2 && strings.HasPrefix(s.src[s.i:], q); n++ {
				s.i++
			}
			return
		}
		s.i++
	}
}

// unescape decodes the escapes of a TOML basic string (TOML 1.1 §String).
// Input the parser accepted is well formed; anything else is kept as is.
func unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' || i+1 >= len(s) {
			b.WriteByte(s[i])
			continue
		}
		i++
		switch c := s[i]; c {
		case 'b':
			b.WriteByte('\b')
		case 't':
			b.WriteByte('\t')
		case 'n':
			b.WriteByte('\n')
		case 'f':
			b.WriteByte('\f')
		case 'r':
			b.WriteByte('\r')
		case 'e':
			b.WriteByte(0x1b)
		case 'x', 'u', 'U':
			n := 2
			if c == 'u' {
				n = 4
			} else if c == 'U' {
				n = 8
			}
			if i+1+n > len(s) {
				b.WriteString(s[i-1:])
				return b.String()
			}
			r, err := strconv.ParseUint(s[i+1:i+1+n], 16, 32)
			if err != nil {
				b.WriteString(s[i-1 : i+1])
				continue
			}
			b.WriteRune(rune(r))
			i += n
		default: // \" and \\
			b.WriteByte(c)
		}
	}
	return b.String()
}

// quote writes one key segment the way toml.Key does.
func quote(k string) string { return toml.Key{k}.String() }

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}
