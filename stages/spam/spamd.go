package spam

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// backend is an external scanner whose score joins the rules' total.
type backend interface {
	// check scans the message. skipped is set (and the score zero) when the
	// backend was not asked, e.g. for a message over the size limit.
	check(ctx context.Context, tx *stages.Transaction) (r backendResult, err error)
}

type backendResult struct {
	name    string // "spamd", "rspamd"
	score   float64
	symbols []string // the backend's rule names, for the log
	skipped string   // why the backend was not asked
}

// messageSize returns the size of tx's message as a backend is sent it,
// the header as written and then the body, and, when that is over limit,
// why the backend is not asked.
func messageSize(tx *stages.Transaction, limit int64) (size int64, skipped string) {
	var head bytes.Buffer
	tx.Header.WriteTo(&head)
	size = int64(head.Len())
	if tx.Body != nil {
		size += tx.Body.Size()
	}
	if size > limit {
		return size, fmt.Sprintf("message of %d bytes over backend_max_size", size)
	}
	return size, ""
}

// maxSymbols bounds what is read of a backend's rule list.
const maxSymbols = 64 << 10

// spamd speaks SPAMC/1.5 to SpamAssassin's spamd, the protocol of spamc
// (spamd/PROTOCOL in the SpamAssassin sources): one request per
// connection, the message after a Content-length header, the verdict in a
// "Spam: True ; 15.0 / 5.0" header of the reply, the rule names in its
// body for the SYMBOLS method.
type spamd struct {
	network, addr string
	timeout       time.Duration
	maxSize       int64
}

var spamHeader = regexp.MustCompile(`^(?i)(true|false|yes|no)\s*;\s*(-?[0-9.]+)\s*/\s*(-?[0-9.]+)$`)

func (d *spamd) check(ctx context.Context, tx *stages.Transaction) (backendResult, error) {
	res := backendResult{name: "spamd"}
	size, skipped := messageSize(tx, d.maxSize)
	if skipped != "" {
		res.skipped = skipped
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, d.network, d.addr)
	if err != nil {
		return res, fmt.Errorf("spamd: %w", err)
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	msg, err := tx.Message()
	if err != nil {
		return res, fmt.Errorf("spamd: read message: %w", err)
	}
	defer msg.Close()
	w := bufio.NewWriter(conn)
	fmt.Fprintf(w, "SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n", size)
	if _, err := io.Copy(w, msg); err != nil {
		return res, fmt.Errorf("spamd: send: %w", ctxErr(ctx, err))
	}
	if err := w.Flush(); err != nil {
		return res, fmt.Errorf("spamd: send: %w", ctxErr(ctx, err))
	}
	// spamc half-closes after the message; spamd reads to Content-length
	// anyway, but some versions wait for the end of input.
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}

	r := bufio.NewReader(io.LimitReader(conn, maxSymbols))
	status, err := r.ReadString('\n')
	if err != nil {
		return res, fmt.Errorf("spamd: read reply: %w", ctxErr(ctx, err))
	}
	// "SPAMD/1.1 0 EX_OK": a code other than 0 is spamd refusing.
	f := strings.Fields(status)
	if len(f) < 2 || !strings.HasPrefix(f[0], "SPAMD/") {
		return res, fmt.Errorf("spamd: unexpected reply %q", strings.TrimSpace(status))
	}
	if f[1] != "0" {
		return res, fmt.Errorf("spamd: error %s", strings.Join(f[1:], " "))
	}
	found := false
	length := int64(maxSymbols)
	for {
		line, err := r.ReadString('\n')
		if err != nil && line == "" {
			if err == io.EOF {
				break
			}
			return res, fmt.Errorf("spamd: read reply: %w", ctxErr(ctx, err))
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		name, value, _ := strings.Cut(line, ":")
		if strings.EqualFold(name, "Spam") {
			m := spamHeader.FindStringSubmatch(strings.TrimSpace(value))
			if m == nil {
				return res, fmt.Errorf("spamd: unexpected Spam header %q", line)
			}
			if res.score, err = strconv.ParseFloat(m[2], 64); err != nil {
				return res, fmt.Errorf("spamd: unexpected Spam header %q", line)
			}
			found = true
		}
		if strings.EqualFold(name, "Content-length") {
			if n, err := strconv.ParseInt(strings.TrimSpace(value), 10, 64); err == nil && n >= 0 {
				length = min(n, length)
			}
		}
	}
	if !found {
		return res, errors.New("spamd: reply without a Spam header")
	}
	body, _ := io.ReadAll(io.LimitReader(r, length))
	for _, s := range strings.Split(strings.TrimSpace(string(body)), ",") {
		if s = strings.TrimSpace(s); s != "" {
			res.symbols = append(res.symbols, s)
		}
	}
	return res, nil
}

// ctxErr prefers the context's error, which says why a connection closed
// under a read or write.
func ctxErr(ctx context.Context, err error) error {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		// The connection's deadline is the context's; it may fire first.
		return context.DeadlineExceeded
	}
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}
