package headers

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/mailgate/mailgate/stages"
)

// placeholders are the names a value may use in braces, as {client_ip}.
var placeholders = []string{"score", "queue_id", "hostname", "client_ip", "client_name", "helo", "from"}

// maxPlaceholder bounds what one placeholder writes: a HELO name or an
// address comes from the client, and a field line has a hard limit (RFC
// 5322 §2.1.1). No legitimate value is longer (RFC 5321 §4.5.3.1).
const maxPlaceholder = 256

// template is a value with placeholders: literal text and names in turn,
// starting with text.
type template struct {
	text  []string
	names []string
}

// parseTemplate splits v at placeholders; "{{" and "}}" write a brace.
func parseTemplate(v string) (template, error) {
	if err := stages.CheckFieldText(v); err != nil {
		return template{}, err
	}
	var t template
	var lit strings.Builder
	for i := 0; i < len(v); i++ {
		switch {
		case strings.HasPrefix(v[i:], "{{"), strings.HasPrefix(v[i:], "}}"):
			lit.WriteByte(v[i])
			i++
		case v[i] == '{':
			end := strings.IndexByte(v[i:], '}')
			if end < 0 {
				return template{}, fmt.Errorf("unclosed { in %q; write {{ for a brace", v)
			}
			name := v[i+1 : i+end]
			if !slices.Contains(placeholders, name) {
				return template{}, fmt.Errorf("unknown placeholder {%s}; expect %s", name, oneOf(placeholders))
			}
			t.text = append(t.text, lit.String())
			t.names = append(t.names, name)
			lit.Reset()
			i += end
		default:
			lit.WriteByte(v[i])
		}
	}
	t.text = append(t.text, lit.String())
	return t, nil
}

func oneOf(names []string) string {
	b := make([]string, len(names))
	for i, n := range names {
		b[i] = "{" + n + "}"
	}
	return strings.Join(b[:len(b)-1], ", ") + " or " + b[len(b)-1]
}

// expand writes the template with the values of vars.
func (t template) expand(vars map[string]string) string {
	var b strings.Builder
	for i, s := range t.text {
		b.WriteString(s)
		if i < len(t.names) {
			b.WriteString(vars[t.names[i]])
		}
	}
	return b.String()
}

// vars returns the placeholder values for tx, made safe to write into a
// field: control characters become "?" and each value is bounded.
func vars(hostname string, tx *stages.Transaction) map[string]string {
	ip := ""
	if tx.Client.Addr != (netip.Addr{}) {
		ip = tx.Client.Addr.Unmap().String()
	}
	m := map[string]string{
		"score":       formatScore(totalScore(tx.Results)),
		"queue_id":    tx.QueueID,
		"hostname":    hostname,
		"client_ip":   ip,
		"client_name": tx.Client.Name,
		"helo":        tx.Client.Helo,
		"from":        tx.From,
	}
	for k, v := range m {
		m[k] = clean(v)
	}
	return m
}

// clean replaces control characters and bounds v to maxPlaceholder bytes,
// cutting at a character boundary.
func clean(v string) string {
	if len(v) > maxPlaceholder {
		n := maxPlaceholder
		for n > 0 && !utf8.RuneStart(v[n]) {
			n--
		}
		v = v[:n]
	}
	return strings.Map(func(r rune) rune {
		if r < 32 || r == 127 {
			return '?'
		}
		return r
	}, v)
}
