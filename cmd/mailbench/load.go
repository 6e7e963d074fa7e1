package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// load is one batch of messages sent to one server: the same client and the
// same messages for every line, so that only the server differs.
type load struct {
	addr     string   // host:port of the server under test
	more     []string // other servers (a cluster's nodes): sessions take turns among them all
	messages int      // how many messages in total
	size     int      // bytes per message, header included
	sessions int      // concurrent SMTP sessions
	perConn  int      // messages per connection before QUIT and a new one
	rate     float64  // messages per second over all sessions; 0: as fast as the server takes them
	from, to string   // envelope addresses
	// proxy: each connection opens with a PROXY protocol header naming
	// the session's own client address (proxyHeader).
	proxy bool
}

// loadResult is what the client saw.
type loadResult struct {
	sent     int            // messages whose DATA got a 354 and whose "." was sent
	accepted int            // 250 replies to the final "."
	refused  map[string]int // other replies (by code) or errors (by kind)
	latency  []time.Duration
	// start is before the first connection; first and last accept are the
	// times of the first and last 250 after ".".
	start, firstAccept, lastAccept time.Time
}

// replyTimeout bounds each wait for a reply, so a hung server fails the
// run instead of hanging it.
const replyTimeout = 2 * time.Minute

// run sends l.messages messages over l.sessions sessions. It returns an
// error only when nothing could be sent at all; refused messages and broken
// connections are counted in the result.
func (l load) run(ctx context.Context) (*loadResult, error) {
	body := messageBody(l.size)
	var (
		next atomic.Int64 // index of the next message to send
		mu   sync.Mutex
		res  = &loadResult{refused: map[string]int{}, latency: make([]time.Duration, 0, l.messages)}
		wg   sync.WaitGroup
	)
	res.start = time.Now()
	claim := func() (int, bool) {
		i := int(next.Add(1)) - 1
		if i >= l.messages || ctx.Err() != nil {
			return 0, false
		}
		if l.rate > 0 {
			// Message i is due at start + i/rate: arrivals keep their
			// pace whatever the replies do (an open loop).
			due := res.start.Add(time.Duration(float64(i) / l.rate * float64(time.Second)))
			if d := time.Until(due); d > 0 {
				select {
				case <-ctx.Done():
					return 0, false
				case <-time.After(d):
				}
			}
		}
		return i, true
	}
	addrs := append([]string{l.addr}, l.more...)
	for i := range l.sessions {
		wg.Go(func() {
			s := &session{l: l, addr: addrs[i%len(addrs)], body: body, res: loadResult{refused: map[string]int{}}}
			if l.proxy {
				s.proxyHeader = proxyHeader(i)
			}
			for {
				done, err := s.connection(ctx, claim)
				mu.Lock()
				res.merge(&s.res)
				if err != nil {
					res.refused["error: "+errKind(err)]++
				}
				mu.Unlock()
				s.res = loadResult{refused: map[string]int{}}
				if done || ctx.Err() != nil {
					return
				}
			}
		})
	}
	wg.Wait()
	if err := ctx.Err(); err != nil {
		return res, err
	}
	if res.sent == 0 {
		return res, fmt.Errorf("no message sent to %s: %v", l.addr, res.refused)
	}
	return res, nil
}

func (r *loadResult) merge(o *loadResult) {
	r.sent += o.sent
	r.accepted += o.accepted
	for k, v := range o.refused {
		r.refused[k] += v
	}
	r.latency = append(r.latency, o.latency...)
	if !o.firstAccept.IsZero() && (r.firstAccept.IsZero() || o.firstAccept.Before(r.firstAccept)) {
		r.firstAccept = o.firstAccept
	}
	if o.lastAccept.After(r.lastAccept) {
		r.lastAccept = o.lastAccept
	}
}

// errKind shortens a network error to something worth counting.
func errKind(err error) string {
	var ne net.Error
	switch {
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.Is(err, context.Canceled):
		return "canceled"
	}
	s := err.Error()
	if i := strings.LastIndex(s, ": "); i >= 0 {
		s = s[i+2:]
	}
	return s
}

// session is one client connection after another.
type session struct {
	l    load
	addr string // the server this session sends to
	body []byte
	res  loadResult
	seq  int
	// claimed: a message is claimed and not yet sent.
	claimed bool
	// proxyHeader opens each connection when the load goes through a
	// proxy; nil otherwise.
	proxyHeader []byte
}

// proxyHeader is the PROXY protocol header of session i: a client of its
// own in 198.18.0.0/15 (RFC 2544's range for benchmarks), connecting to
// 192.0.2.1:25; version 1 (text) for even sessions and 2 (binary) for odd
// ones, as HAProxy's send-proxy and send-proxy-v2 write them (the PROXY
// protocol spec, §2.1 and §2.2).
func proxyHeader(i int) []byte {
	src := [4]byte{198, 18 + byte(i>>16&1), byte(i >> 8), byte(i)}
	port := uint16(40000 + i%20000)
	if i%2 == 0 {
		return fmt.Appendf(nil, "PROXY TCP4 %d.%d.%d.%d 192.0.2.1 %d 25\r\n", src[0], src[1], src[2], src[3], port)
	}
	h := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x0c") // signature, v2 PROXY, TCP over IPv4, 12 bytes
	h = append(h, src[:]...)
	h = append(h, 192, 0, 2, 1)
	h = binary.BigEndian.AppendUint16(h, port)
	return binary.BigEndian.AppendUint16(h, 25)
}

// connection sends messages over one connection until perConn is reached
// (done false) or no message is left (done true).
//
// It claims its first message before it dials: at a paced rate a session
// connects when it has a message due, as a sending MTA does. Dialing
// first opened every session of a batch at its start, a burst of
// connections (greeting, EHLO, the connect checks) that the first paced
// messages waited behind: in one run at half peak, without the first
// 60 ms of each batch the chain line's p99 was 11 ms instead of 14.
func (s *session) connection(ctx context.Context, claim func() (int, bool)) (done bool, err error) {
	if !s.claimed {
		if _, ok := claim(); !ok {
			return true, nil
		}
		s.claimed = true // kept if this connection fails before sending it
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.addr)
	if err != nil {
		// Back off a little so a refusing server does not spin the client.
		time.Sleep(100 * time.Millisecond)
		return false, fmt.Errorf("dial: %w", err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	c := &client{conn: conn, r: bufio.NewReaderSize(conn, 4096), w: bufio.NewWriterSize(conn, 64<<10)}
	if s.proxyHeader != nil {
		// The header goes first, alone: a client that sent more before
		// the banner would fail the pre-greet test.
		if _, err := conn.Write(s.proxyHeader); err != nil {
			return false, fmt.Errorf("PROXY header: %w", err)
		}
	}
	if code, _, err := c.reply(); err != nil || code != 220 {
		return false, greetingError(code, err)
	}
	c.w.WriteString("EHLO bench.localhost\r\n")
	code, text, err := c.flushReply()
	if err != nil || code != 250 {
		return false, fmt.Errorf("EHLO: %d %v", code, err)
	}
	if !hasExtension(text, "PIPELINING") {
		return true, fmt.Errorf("%s does not announce PIPELINING", s.addr)
	}
	for n := 0; n < s.l.perConn; n++ {
		if !s.claimed {
			if _, ok := claim(); !ok {
				c.w.WriteString("QUIT\r\n")
				c.flushReply()
				return true, nil
			}
		}
		s.claimed = false
		if err := s.message(c); err != nil {
			return false, err
		}
	}
	c.w.WriteString("QUIT\r\n")
	c.flushReply()
	return false, nil
}

func greetingError(code int, err error) error {
	if err != nil {
		return fmt.Errorf("greeting: %w", err)
	}
	return fmt.Errorf("greeting: %d", code)
}

// message sends one message. MAIL, RCPT and DATA go in one write: RFC 2920
// §3.1 lets a client send them as a group, DATA being the last command
// before the client must wait.
func (s *session) message(c *client) error {
	fmt.Fprintf(c.w, "MAIL FROM:<%s> SIZE=%d\r\nRCPT TO:<%s>\r\nDATA\r\n", s.l.from, len(s.body), s.l.to)
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("send MAIL: %w", err)
	}
	var codes [3]int
	for i := range codes {
		code, _, err := c.reply()
		if err != nil {
			return fmt.Errorf("envelope reply: %w", err)
		}
		codes[i] = code
	}
	if codes[0] != 250 || codes[1] != 250 || codes[2] != 354 {
		s.res.refused[fmt.Sprintf("envelope %d/%d/%d", codes[0], codes[1], codes[2])]++
		if codes[2] == 354 {
			// Unlikely (DATA accepted after a refused RCPT), but then the
			// server waits for a message: end it empty.
			c.w.WriteString(".\r\n")
			c.flushReply()
		} else if codes[0] == 250 {
			// The transaction is still open: the next MAIL would be
			// nested (503, as Postfix and mailgate answer).
			c.w.WriteString("RSET\r\n")
			c.flushReply()
		}
		return nil
	}
	s.seq++
	fmt.Fprintf(c.w, "Message-ID: <%d.%d@bench.localhost>\r\n", time.Now().UnixNano(), s.seq)
	c.w.Write(s.body)
	c.w.WriteString(".\r\n")
	if err := c.w.Flush(); err != nil {
		return fmt.Errorf("send message: %w", err)
	}
	sentAt := time.Now()
	s.res.sent++
	code, _, err := c.reply()
	if err != nil {
		return fmt.Errorf("reply to end of data: %w", err)
	}
	now := time.Now()
	if code != 250 {
		s.res.refused[strconv.Itoa(code)]++
		return nil
	}
	s.res.accepted++
	s.res.latency = append(s.res.latency, now.Sub(sentAt))
	if s.res.firstAccept.IsZero() {
		s.res.firstAccept = now
	}
	s.res.lastAccept = now
	return nil
}

// client is the bare SMTP client side of one connection.
type client struct {
	conn net.Conn
	r    *bufio.Reader
	w    *bufio.Writer
}

func (c *client) flushReply() (int, string, error) {
	if err := c.w.Flush(); err != nil {
		return 0, "", err
	}
	return c.reply()
}

// reply reads one reply, multi-line ones included (RFC 5321 §4.2.1: every
// line but the last has "-" after the code).
func (c *client) reply() (int, string, error) {
	c.conn.SetReadDeadline(time.Now().Add(replyTimeout))
	var text strings.Builder
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return 0, "", err
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return 0, "", fmt.Errorf("malformed reply %q", line)
		}
		if len(line) > 3 {
			text.WriteString(line[4:])
			text.WriteByte('\n')
		}
		if len(line) == 3 || line[3] == ' ' {
			return code, text.String(), nil
		}
	}
}

func hasExtension(ehlo, name string) bool {
	return slices.ContainsFunc(strings.Split(ehlo, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) > 0 && strings.EqualFold(f[0], name)
	})
}

// messageBody is a plain text message of about size bytes, header included
// (the Message-ID the client adds comes on top), ending in CRLF. Its lines
// are ordinary prose, so filters do the same work as on real mail, and none
// starts with "." (no dot-stuffing needed).
func messageBody(size int) []byte {
	var b strings.Builder
	b.WriteString("From: Bench Sender <bench@sender.test>\r\n")
	b.WriteString("To: Bench Recipient <user@bench.test>\r\n")
	b.WriteString("Subject: Quarterly figures for the planning meeting\r\n")
	b.WriteString("Date: Mon, 02 Mar 2026 10:00:00 +0000\r\n")
	b.WriteString("MIME-Version: 1.0\r\n")
	b.WriteString("Content-Type: text/plain; charset=utf-8\r\n")
	b.WriteString("\r\n")
	const line = "Please find below the figures we discussed on Tuesday, with the notes\r\n"
	words := []string{"budget", "travel", "review", "schedule", "office", "report", "project", "team"}
	for i := 0; b.Len() < size; i++ {
		if i%8 == 7 {
			fmt.Fprintf(&b, "Item %d: %s %s %d.%02d\r\n", i, words[i%len(words)], words[(i/8)%len(words)], i*37%1000, i%100)
			continue
		}
		b.WriteString(line)
	}
	return []byte(b.String())
}
