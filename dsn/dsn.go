// Package dsn writes the delivery status notification (RFC 3464) that
// tells a sender some recipients of its message failed for good: a
// multipart/report (RFC 6522) with a text for people, the status of each
// recipient for programs, its RFC 3463 code taken from the last reply,
// and the header of the message. When to send one is the router's
// business; what it says is this package's.
package dsn

import (
	"bufio"
	"bytes"
	"cmp"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"time"
)

// Report is a DSN about some recipients of one message.
type Report struct {
	ID       string    // the DSN's own queue ID; its Message-ID is <ID@Hostname>
	Hostname string    // Reporting-MTA
	From     string    // the address of the header From (delivery.bounce_from)
	To       string    // the sender of the message
	Date     time.Time // when the DSN is made
	QueueID  string    // the message's queue ID
	Arrival  time.Time // when the message was received
	// MaxAge is how long delivery was tried, for the recipients that
	// failed by expiry.
	MaxAge time.Duration
	Failed []Failure
	Header []byte // the message's header (ReadHeader)
}

// Failure is a recipient that failed for good.
type Failure struct {
	Addr  string
	Reply string    // the last reply: a 5xx, or anything else for an expiry
	Host  string    // the host:port that gave it, or ""
	At    time.Time // when; zero for unknown
}

// enhanced matches the enhanced status code after the reply code (RFC 3463).
var enhanced = regexp.MustCompile(`^[245]\d\d ([245]\.\d{1,3}\.\d{1,3})\b`)

// Status returns the RFC 3463 status of a recipient that failed with
// reply, and whether it failed by expiry rather than by a 5xx reply.
func Status(reply string) (code string, expired bool) {
	if !strings.HasPrefix(reply, "5") {
		// X.4.7: delivery time expired (RFC 3463 §3.5).
		return "5.4.7", true
	}
	if m := enhanced.FindStringSubmatch(reply); m != nil && m[1][0] == '5' {
		return m[1], false
	}
	return "5.0.0", false
}

// Write writes the DSN message to w, CRLF line ends.
func (d *Report) Write(w io.Writer) error {
	bw := bufio.NewWriter(w)
	boundary := "=_" + rand.Text()
	p := func(format string, args ...any) { fmt.Fprintf(bw, format+"\r\n", args...) }

	p("From: Mail Delivery System <%s>", d.From)
	p("To: <%s>", d.To)
	p("Subject: Undelivered Mail Returned to Sender")
	p("Date: %s", d.Date.Format(time.RFC1123Z))
	p("Message-ID: <%s@%s>", d.ID, d.Hostname)
	// RFC 3834 §5: automatic responses say so, and nobody should answer.
	p("Auto-Submitted: auto-replied")
	p("MIME-Version: 1.0")
	p("Content-Type: multipart/report; report-type=delivery-status;")
	p("\tboundary=\"%s\"", boundary)
	p("")
	p("This is a MIME-encapsulated message.")
	p("")

	p("--%s", boundary)
	p("Content-Type: text/plain; charset=utf-8")
	p("Content-Transfer-Encoding: 8bit")
	p("")
	p("This is the mail system at host %s.", d.Hostname)
	p("")
	p("Your message could not be delivered to one or more recipients.")
	p("Its header is attached below.")
	p("")
	for _, f := range d.Failed {
		switch _, expired := Status(f.Reply); {
		case expired:
			p("<%s>: delivery time expired after %s; last reply: %s", f.Addr, d.MaxAge, cmp.Or(f.Reply, "none"))
		case f.Host != "":
			p("<%s>: host %s said: %s", f.Addr, f.Host, f.Reply)
		default:
			p("<%s>: %s", f.Addr, f.Reply)
		}
	}
	p("")

	p("--%s", boundary)
	p("Content-Type: message/delivery-status")
	p("")
	p("Reporting-MTA: dns; %s", d.Hostname)
	p("X-Mailgate-Queue-ID: %s", d.QueueID)
	p("Arrival-Date: %s", d.Arrival.Format(time.RFC1123Z))
	for _, f := range d.Failed {
		code, _ := Status(f.Reply)
		p("")
		p("Final-Recipient: rfc822; %s", f.Addr)
		p("Action: failed")
		p("Status: %s", code)
		if f.Host != "" {
			host, _, err := net.SplitHostPort(f.Host)
			if err != nil {
				host = f.Host
			}
			p("Remote-MTA: dns; %s", host)
		}
		if f.Reply != "" {
			p("Diagnostic-Code: smtp; %s", f.Reply)
		}
		if !f.At.IsZero() {
			p("Last-Attempt-Date: %s", f.At.Format(time.RFC1123Z))
		}
	}
	p("")

	p("--%s", boundary)
	p("Content-Type: text/rfc822-headers")
	p("")
	bw.Write(d.Header)
	p("")
	p("--%s--", boundary)
	return bw.Flush()
}

// MaxHeader bounds the header ReadHeader returns.
const MaxHeader = 64 << 10

// ReadHeader returns the header of a message, up to MaxHeader bytes cut
// at a line end, without the empty line that ends it. Lines end in CRLF.
func ReadHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, MaxHeader))
	var h bytes.Buffer
	for {
		line, err := br.ReadBytes('\n')
		if len(line) > 0 && line[len(line)-1] == '\n' {
			if len(bytes.TrimRight(line, "\r\n")) == 0 {
				return h.Bytes(), nil
			}
			h.Write(line)
		}
		if err == io.EOF {
			return h.Bytes(), nil
		}
		if err != nil {
			return nil, err
		}
	}
}
