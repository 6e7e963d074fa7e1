package router

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"net"
	"regexp"
	"strings"
	"time"

	"github.com/mailgate/mailgate/gateway/spool"
)

// dsn is what a delivery status notification (RFC 3464) reports.
type dsn struct {
	id         string // queue ID of the DSN itself
	hostname   string // Reporting-MTA
	bounceFrom string // header From
	date       time.Time
	env        *spool.Envelope   // the original message
	failed     []spool.Recipient // the recipients it reports
	header     []byte            // the original header, for the text/rfc822-headers part
	maxAge     time.Duration
}

// enhanced matches the enhanced status code after the reply code (RFC 3463).
var enhanced = regexp.MustCompile(`^[245]\d\d ([245]\.\d{1,3}\.\d{1,3})\b`)

// status returns the RFC 3463 status of a failed recipient and whether it
// failed by expiry rather than by a 5xx reply.
func status(reply string) (code string, expired bool) {
	if !strings.HasPrefix(reply, "5") {
		// X.4.7: delivery time expired (RFC 3463 §3.5).
		return "5.4.7", true
	}
	if m := enhanced.FindStringSubmatch(reply); m != nil && m[1][0] == '5' {
		return m[1], false
	}
	return "5.0.0", false
}

// render writes the DSN message: a multipart/report (RFC 6522) with a
// human-readable part, the message/delivery-status part (RFC 3464 §2) and
// the original header.
func (d *dsn) render(w io.Writer) error {
	bw := bufio.NewWriter(w)
	boundary := "=_" + rand.Text()
	date := d.date.Format(time.RFC1123Z)
	p := func(format string, args ...any) { fmt.Fprintf(bw, format+"\r\n", args...) }

	p("From: Mail Delivery System <%s>", d.bounceFrom)
	p("To: <%s>", d.env.From)
	p("Subject: Undelivered Mail Returned to Sender")
	p("Date: %s", date)
	p("Message-ID: <%s@%s>", d.id, d.hostname)
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
	p("This is the mail system at host %s.", d.hostname)
	p("")
	p("Your message could not be delivered to one or more recipients.")
	p("Its header is attached below.")
	p("")
	for _, r := range d.failed {
		if _, expired := status(r.LastReply); expired {
			last := r.LastReply
			if last == "" {
				last = "none"
			}
			p("<%s>: delivery time expired after %s; last reply: %s", r.Addr, d.maxAge, last)
			continue
		}
		if r.LastHost != "" {
			p("<%s>: host %s said: %s", r.Addr, r.LastHost, r.LastReply)
		} else {
			p("<%s>: %s", r.Addr, r.LastReply)
		}
	}
	p("")

	p("--%s", boundary)
	p("Content-Type: message/delivery-status")
	p("")
	p("Reporting-MTA: dns; %s", d.hostname)
	p("X-Mailgate-Queue-ID: %s", d.env.ID)
	p("Arrival-Date: %s", d.env.Received.Format(time.RFC1123Z))
	for _, r := range d.failed {
		code, _ := status(r.LastReply)
		p("")
		p("Final-Recipient: rfc822; %s", r.Addr)
		p("Action: failed")
		p("Status: %s", code)
		if r.LastHost != "" {
			host, _, err := net.SplitHostPort(r.LastHost)
			if err != nil {
				host = r.LastHost
			}
			p("Remote-MTA: dns; %s", host)
		}
		if r.LastReply != "" {
			p("Diagnostic-Code: smtp; %s", r.LastReply)
		}
		if !r.Updated.IsZero() {
			p("Last-Attempt-Date: %s", r.Updated.Format(time.RFC1123Z))
		}
	}
	p("")

	p("--%s", boundary)
	p("Content-Type: text/rfc822-headers")
	p("")
	bw.Write(d.header)
	p("")
	p("--%s--", boundary)
	return bw.Flush()
}

// maxHeader bounds the original header copied into a DSN.
const maxHeader = 64 << 10

// readHeader returns the header of a message, up to maxHeader bytes cut
// at a line end, without the empty line that ends it. Lines end in CRLF.
func readHeader(r io.Reader) ([]byte, error) {
	br := bufio.NewReader(io.LimitReader(r, maxHeader))
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
