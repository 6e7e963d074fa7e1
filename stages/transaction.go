package stages

import (
	"bytes"
	"io"
	"net/netip"
	"strings"
)

// Transaction is what a stage sees of one SMTP transaction. Fields fill in
// as the session advances: Client at connect, From at MAIL, Rcpts at each
// RCPT, Header and Body at the end of DATA. From and Rcpts are in the
// canonical form of package address (the domain lower-cased, without root
// dot, in A-labels; the local part as the client wrote it), whatever
// spelling the client used.
type Transaction struct {
	QueueID string   `json:"queue_id,omitempty"`
	Client  Client   `json:"client"`
	From    string   `json:"from"`            // envelope sender; "" is the null sender <>
	Rcpts   []string `json:"rcpts,omitempty"` // in the rcpt phase the last one is being checked
	Header  Header   `json:"header,omitempty"`
	Body    Body     `json:"-"`
	// Results holds the verdicts of the stages that ran before this one in
	// this transaction, in chain order, for stages that declare NeedResults.
	Results []Result `json:"results,omitempty"`
}

// Client is the connecting SMTP client.
type Client struct {
	Addr     netip.Addr `json:"addr"`
	Port     uint16     `json:"port,omitempty"`
	Name     string     `json:"name,omitempty"` // verified reverse DNS name, "" if none
	Helo     string     `json:"helo,omitempty"`
	TLS      string     `json:"tls,omitempty"`     // "TLS1.3 TLS_AES_128_GCM_SHA256", "" without TLS
	AuthUser string     `json:"auth,omitempty"`    // authenticated user, "" if none
	Trusted  bool       `json:"trusted,omitempty"` // in trusted_networks
}

// Result is one earlier stage's verdict, as later stages see it.
type Result struct {
	Stage   string  `json:"stage"`
	Kind    string  `json:"kind"`
	Action  Action  `json:"action"`
	Score   float64 `json:"score,omitempty"`
	Result  string  `json:"result,omitempty"`
	Reason  string  `json:"reason,omitempty"`
	Errored bool    `json:"errored,omitempty"` // the stage broke; on_error applied
}

// Field is one header field. Value is the text after the colon, without
// the one space that conventionally follows it, with folding (CRLF + white
// space) kept as received.
//
// A field read from a message (ParseHeader, ParseField) also keeps the
// bytes it was read from, and Raw and WriteTo give them back while Name
// and Value are still what those bytes say: a gateway relays the fields it
// did not edit byte for byte, since a DKIM signature with simple header
// canonicalization covers every byte of them (RFC 6376 §3.4.1), the
// absence of the space after the colon included. A field made with a
// literal or NewField, or whose Name or Value was changed, is written as
// "Name: Value".
type Field struct {
	Name  string `json:"name"`
	Value string `json:"value"`
	raw   string // as read, without the final CRLF; "" for a field made here
}

// ParseField reads one header field as it is written, from its name to the
// end of its last line without the final CRLF, folds included. A line that
// is not a field (no colon, or white space in what would be the name) is
// kept whole as a field with an empty name, so that nothing is lost.
func ParseField(raw string) Field {
	i := strings.IndexByte(raw, ':')
	if i <= 0 || strings.ContainsAny(raw[:i], " \t\r\n") {
		return Field{Value: raw, raw: raw}
	}
	return Field{Name: raw[:i], Value: strings.TrimPrefix(raw[i+1:], " "), raw: raw}
}

// Raw returns the field as it goes on the wire, without the final CRLF:
// the bytes it was read from when Name and Value are still theirs, else
// "Name: Value" (Value alone for a line that is not a field).
func (f Field) Raw() string {
	if f.Name == "" {
		return f.Value
	}
	n := len(f.Name)
	if len(f.raw) > n && f.raw[n] == ':' && f.raw[:n] == f.Name && strings.TrimPrefix(f.raw[n+1:], " ") == f.Value {
		return f.raw
	}
	return f.Name + ": " + f.Value
}

// Header is a message header in order, top first.
type Header []Field

// Get returns the unfolded value of the first field called name, or "".
func (h Header) Get(name string) string {
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			return Unfold(f.Value)
		}
	}
	return ""
}

// Values returns the unfolded values of every field called name.
func (h Header) Values(name string) []string {
	var vs []string
	for _, f := range h {
		if strings.EqualFold(f.Name, name) {
			vs = append(vs, Unfold(f.Value))
		}
	}
	return vs
}

// WriteTo writes the header block in wire form, ending with the empty line
// that separates it from the body: each field as Raw gives it.
func (h Header) WriteTo(w io.Writer) (int64, error) {
	var b bytes.Buffer
	for _, f := range h {
		b.WriteString(f.Raw())
		b.WriteString("\r\n")
	}
	b.WriteString("\r\n")
	return b.WriteTo(w)
}

// Unfold removes header folding (RFC 5322 §2.2.3) and trims the ends.
func Unfold(v string) string {
	if !strings.ContainsAny(v, "\r\n") {
		return strings.TrimSpace(v)
	}
	v = strings.ReplaceAll(v, "\r\n", "")
	v = strings.ReplaceAll(v, "\n", "")
	return strings.TrimSpace(v)
}

// ParseHeader reads a header block from r up to and including the empty line
// and returns the fields, each as ParseField reads it. Continuation lines
// join the field above with CRLF, whatever line end they came with; a
// continuation line at the very top is a line that is not a field. The
// reader is left at the first byte of the body.
func ParseHeader(r interface {
	io.Reader
	ReadString(byte) (string, error)
}) (Header, error) {
	var h Header
	var cur strings.Builder // the field being read
	flush := func() {
		if cur.Len() > 0 {
			h = append(h, ParseField(cur.String()))
			cur.Reset()
		}
	}
	for {
		line, err := r.ReadString('\n')
		if line == "" && err != nil {
			flush()
			if err == io.EOF {
				return h, nil
			}
			return h, err
		}
		trimmed := strings.TrimRight(line, "\r\n")
		if trimmed == "" {
			flush()
			return h, nil
		}
		if (line[0] == ' ' || line[0] == '\t') && cur.Len() > 0 {
			cur.WriteString("\r\n")
		} else {
			flush()
		}
		cur.WriteString(trimmed)
		if err != nil {
			flush()
			if err == io.EOF {
				return h, nil
			}
			return h, err
		}
	}
}

// Body gives access to the message body (what follows the header block),
// without copying it: the engine backs it with the spooled file.
type Body interface {
	Size() int64
	// Open returns a fresh reader positioned at the start of the body.
	Open() (io.ReadCloser, error)
}

// BytesBody is a Body held in memory, for tests and small messages.
type BytesBody []byte

func (b BytesBody) Size() int64 { return int64(len(b)) }

func (b BytesBody) Open() (io.ReadCloser, error) {
	return io.NopCloser(bytes.NewReader(b)), nil
}

// Message returns a reader of the whole message: header block then body.
// It is what scanners like clamd want.
func (tx *Transaction) Message() (io.ReadCloser, error) {
	var hb bytes.Buffer
	tx.Header.WriteTo(&hb)
	if tx.Body == nil {
		return io.NopCloser(&hb), nil
	}
	body, err := tx.Body.Open()
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.MultiReader(&hb, body), body}, nil
}
