package milter

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	gomilter "github.com/emersion/go-milter"

	"github.com/mailgate/mailgate/stages"
)

// Protocol codes go-milter does not name.
const (
	respProgress  = 'p' // SMFIR_PROGRESS: still working, restart the timer
	modAddRcptPar = '2' // SMFIR_ADDRCPT_PAR: add a recipient with ESMTP arguments
)

// maxPacket bounds one packet from the milter before anything is
// allocated. libmilter sends body replacements in chunks of at most
// MILTER_CHUNK_SIZE (65535) bytes and everything else is smaller; 1 MiB is
// also what go-milter's server accepts.
const maxPacket = 1 << 20

// protocolVersion is the milter protocol version offered: 6, that of
// sendmail 8.14+ and Postfix 2.6+.
const protocolVersion = 6

// offerActions are the modifications the stage can apply. ESMTP arguments
// of SMFIR_ADDRCPT_PAR and SMFIR_CHGFROM are dropped, as the gateway keeps
// none per recipient.
const offerActions = gomilter.OptAddHeader | gomilter.OptChangeBody | gomilter.OptAddRcpt |
	gomilter.OptRemoveRcpt | gomilter.OptChangeHeader | gomilter.OptQuarantine |
	gomilter.OptChangeFrom | gomilter.OptAddRcptWithArgs | gomilter.OptSetSymList

// offerProtocol are the steps the stage can leave out and the replies it
// can do without when the milter asks. SMFIP_RCPT_REJ is offered because
// it costs nothing: no rejected recipient ever reaches the data phase.
const offerProtocol = gomilter.OptNoConnect | gomilter.OptNoHelo | gomilter.OptNoMailFrom |
	gomilter.OptNoRcptTo | gomilter.OptNoBody | gomilter.OptNoHeaders | gomilter.OptNoEOH |
	gomilter.OptNoHeaderReply | gomilter.OptNoUnknown | gomilter.OptNoData | gomilter.OptSkip |
	gomilter.OptRcptRej | gomilter.OptNoConnReply | gomilter.OptNoHeloReply |
	gomilter.OptNoMailReply | gomilter.OptNoRcptReply | gomilter.OptNoDataReply |
	gomilter.OptNoUnknownReply | gomilter.OptNoEOHReply | gomilter.OptNoBodyReply |
	gomilter.OptHeaderLeadingSpace

// versionProtocol returns the protocol flags that exist in a protocol
// version, so that a milter answering with an older version is held to
// what that version defines (sendmail's libmilter/mfdef.h history).
func versionProtocol(v uint32) gomilter.OptProtocol {
	switch {
	case v >= 6:
		return offerProtocol
	case v >= 4:
		return 0x3ff // up to SMFIP_NODATA
	case v == 3:
		return 0xff // up to SMFIP_NOHREPL
	}
	return 0x7f
}

// session is one connection to the milter, negotiated.
type session struct {
	nc      net.Conn
	r       *bufio.Reader
	version uint32
	actions gomilter.OptAction
	proto   gomilter.OptProtocol
	// symlist holds the macros the milter asked for per step
	// (SMFIF_SETSYMLIST); a step it did not name gets the defaults.
	symlist map[gomilter.Stage][]string

	timeout time.Duration   // of the current step; a progress packet restarts it
	limit   time.Time       // the caller's deadline, which nothing extends
	ctx     context.Context // the caller's; nil between conversations
	heard   bool            // a packet arrived in the current conversation
}

// dial connects and negotiates options within timeout (the connect_timeout).
func dial(ctx context.Context, network, address string, timeout time.Duration) (*session, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, fmt.Errorf("connect: %w", err)
	}
	s := &session{nc: nc, r: bufio.NewReader(nc), timeout: timeout, ctx: ctx}
	if dl, ok := ctx.Deadline(); ok {
		s.limit = dl
	}
	stop := context.AfterFunc(ctx, s.interrupt)
	defer stop()
	if err := s.negotiate(); err != nil {
		nc.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("negotiate: %w", context.Cause(ctx))
		}
		return nil, fmt.Errorf("negotiate: %w", err)
	}
	return s, nil
}

// interrupt makes a blocked read or write return at once.
func (s *session) interrupt() { s.nc.SetDeadline(time.Unix(1, 0)) }

// deadline is when the current read or write must be done: the step's
// timeout from now, or the caller's deadline if that is sooner, or at once
// when the caller has given up (interrupt covers an operation under way;
// this, the ones after it).
func (s *session) deadline() time.Time {
	if s.ctx != nil && s.ctx.Err() != nil {
		return time.Unix(1, 0)
	}
	d := time.Now().Add(s.timeout)
	if !s.limit.IsZero() && s.limit.Before(d) {
		return s.limit
	}
	return d
}

// negotiate exchanges SMFIC_OPTNEG. The milter answers with its version
// and the subset of offered actions and protocol flags it wants, and may
// append the macros it wants per step.
func (s *session) negotiate() error {
	var b [12]byte
	binary.BigEndian.PutUint32(b[0:], protocolVersion)
	binary.BigEndian.PutUint32(b[4:], uint32(offerActions))
	binary.BigEndian.PutUint32(b[8:], uint32(offerProtocol))
	if err := s.write(byte(gomilter.CodeOptNeg), b[:]); err != nil {
		return err
	}
	p, err := s.read()
	if err != nil {
		return err
	}
	if p.code != byte(gomilter.CodeOptNeg) {
		return fmt.Errorf("unexpected %s in answer to option negotiation", describe(p.code))
	}
	return s.parseOptions(p.data)
}

// parseOptions reads the milter's SMFIC_OPTNEG answer. Versions 2 to 6
// are accepted (sendmail 8.10 to 8.14+): the session then speaks that
// version, as Postfix does with older milters.
func (s *session) parseOptions(data []byte) error {
	if len(data) < 12 {
		return fmt.Errorf("option negotiation of %d bytes; expect at least 12", len(data))
	}
	s.version = binary.BigEndian.Uint32(data[0:])
	if s.version < 2 || s.version > protocolVersion {
		return fmt.Errorf("unsupported protocol version %d; expect 2 to %d", s.version, protocolVersion)
	}
	// A flag the milter asks for that was never offered is dropped, as
	// the milter cannot rely on it.
	s.actions = gomilter.OptAction(binary.BigEndian.Uint32(data[4:])) & offerActions
	s.proto = gomilter.OptProtocol(binary.BigEndian.Uint32(data[8:])) & offerProtocol & versionProtocol(s.version)
	s.symlist = nil
	rest := data[12:]
	for len(rest) > 0 {
		if len(rest) < 5 {
			return errors.New("truncated macro list in option negotiation")
		}
		st := gomilter.Stage(binary.BigEndian.Uint32(rest))
		rest = rest[4:]
		end := bytes.IndexByte(rest, 0)
		if end < 0 {
			return errors.New("unterminated macro list in option negotiation")
		}
		if st <= gomilter.StageEOH {
			if s.symlist == nil {
				s.symlist = make(map[gomilter.Stage][]string)
			}
			s.symlist[st] = strings.Fields(string(rest[:end]))
		}
		rest = rest[end+1:]
	}
	return nil
}

// packet is one milter packet: a command or reply code and its data.
type packet struct {
	code byte
	data []byte
}

// write sends one packet: a 4-byte big-endian length covering code and
// data, the code, the data.
func (s *session) write(code byte, data []byte) error {
	buf := make([]byte, 5, 5+len(data))
	binary.BigEndian.PutUint32(buf, uint32(1+len(data)))
	buf[4] = code
	buf = append(buf, data...)
	s.nc.SetWriteDeadline(s.deadline())
	if _, err := s.nc.Write(buf); err != nil {
		return fmt.Errorf("send %s: %w", describe(code), err)
	}
	return nil
}

// read receives one packet, with the step's timeout from now.
func (s *session) read() (packet, error) {
	s.nc.SetReadDeadline(s.deadline())
	p, err := readPacket(s.r)
	if err != nil {
		return p, err
	}
	s.heard = true
	return p, nil
}

// readPacket reads one packet and refuses a length of zero or one over
// maxPacket before allocating.
func readPacket(r io.Reader) (packet, error) {
	var hdr [4]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		if errors.Is(err, io.EOF) {
			return packet{}, errors.New("milter closed the connection")
		}
		return packet{}, fmt.Errorf("read: %w", err)
	}
	n := binary.BigEndian.Uint32(hdr[:])
	if n == 0 || n > maxPacket {
		return packet{}, fmt.Errorf("malformed packet: length %d; expect 1 to %d", n, maxPacket)
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) {
			return packet{}, fmt.Errorf("milter closed the connection in a packet of %d bytes", n)
		}
		return packet{}, fmt.Errorf("read: %w", err)
	}
	return packet{code: buf[0], data: buf[1:]}, nil
}

// reply is the milter's answer to one command.
type reply struct {
	code gomilter.ActionCode
	smtp *stages.Reply // the reply of SMFIR_REPLYCODE
}

var replyContinue = reply{code: gomilter.ActContinue}

// command sends macros for stage (none if names is empty), then the
// command, and reads the reply unless the milter asked for none.
func (s *session) command(stage gomilter.Stage, macros []string, code gomilter.Code, data []byte, noReply gomilter.OptProtocol) (reply, error) {
	if len(macros) > 0 {
		if err := s.write(byte(gomilter.CodeMacro), macroPacket(code, macros)); err != nil {
			return reply{}, err
		}
	}
	if err := s.write(byte(code), data); err != nil {
		return reply{}, err
	}
	if noReply != 0 && s.proto&noReply != 0 {
		return replyContinue, nil
	}
	return s.readReply(code)
}

// readReply reads packets until a reply, letting progress packets restart
// the timer (SMFIR_PROGRESS, protocol version 6).
func (s *session) readReply(to gomilter.Code) (reply, error) {
	for {
		p, err := s.read()
		if err != nil {
			return reply{}, err
		}
		switch gomilter.ActionCode(p.code) {
		case respProgress:
			continue
		case gomilter.ActAccept, gomilter.ActContinue, gomilter.ActDiscard, gomilter.ActReject,
			gomilter.ActTempFail, gomilter.ActSkip:
			return reply{code: gomilter.ActionCode(p.code)}, nil
		case gomilter.ActReplyCode:
			return replyCode(p.data)
		}
		return reply{}, fmt.Errorf("unexpected %s in answer to %s", describe(p.code), describe(byte(to)))
	}
}

func replyCode(data []byte) (reply, error) {
	r, err := parseReply(data)
	if err != nil {
		return reply{}, fmt.Errorf("malformed reply code: %w", err)
	}
	return reply{code: gomilter.ActReplyCode, smtp: r}, nil
}

// macroPacket is the data of SMFIC_MACRO: the command the macros are for,
// then name and value pairs as C strings.
func macroPacket(code gomilter.Code, kv []string) []byte {
	return append([]byte{byte(code)}, cstrings(kv...)...)
}

// cstrings joins strings as NUL-terminated C strings.
func cstrings(ss ...string) []byte {
	var b []byte
	for _, s := range ss {
		b = append(b, s...)
		b = append(b, 0)
	}
	return b
}

// describe names a packet code for errors and logs.
func describe(code byte) string {
	if code >= 0x21 && code < 0x7f {
		return fmt.Sprintf("packet %q", rune(code))
	}
	return fmt.Sprintf("packet 0x%02x", code)
}
