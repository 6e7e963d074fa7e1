package headers

import (
	"mime"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

// decode returns the text a rule's pattern is matched against: the value
// unfolded, with RFC 2047 encoded-words decoded, so that a pattern is
// written for what a reader sees ("Grüße", not "=?UTF-8?Q?Gr=C3=BC=C3=9Fe?=").
// encoded reports whether there were encoded-words. A value with a charset
// Go cannot decode (anything but UTF-8, ISO-8859-1 and US-ASCII) is matched
// as it is.
func decode(raw string) (text string, encoded bool) {
	u := stages.Unfold(raw)
	if !strings.Contains(u, "=?") {
		return u, false
	}
	var d mime.WordDecoder
	t, err := d.DecodeHeader(u)
	if err != nil || t == u {
		return u, false
	}
	return t, true
}

// encode writes a rewritten value that had encoded-words back in RFC 2047
// form: the span from the first to the last word with bytes outside
// printable ASCII becomes Q-encoded UTF-8 (one span, so the spaces inside
// survive: white space between encoded-words is dropped when decoding, RFC
// 2047 §6.2); the words around it stay readable. Decoded control
// characters are encoded too, so they never reach the header raw.
func encode(text string) string {
	start, end := -1, -1
	for i := 0; i < len(text); {
		if isWSP(text[i]) {
			i++
			continue
		}
		j := i
		for j < len(text) && !isWSP(text[j]) {
			j++
		}
		if needsEncoding(text[i:j]) {
			if start < 0 {
				start = i
			}
			end = j
		}
		i = j
	}
	if start < 0 {
		return text
	}
	return text[:start] + mime.QEncoding.Encode("utf-8", text[start:end]) + text[end:]
}

func needsEncoding(word string) bool {
	for i := 0; i < len(word); i++ {
		if c := word[i]; c < 32 || c > 126 {
			return true
		}
	}
	return false
}

func isWSP(c byte) bool { return c == ' ' || c == '\t' }
