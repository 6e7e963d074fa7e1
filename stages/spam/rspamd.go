package spam

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// rspamd asks rspamd's normal worker over its HTTP protocol: the message
// POSTed to /checkv2 with the envelope in request headers (IP, Helo, From,
// Rcpt, Queue-Id, Hostname, User), a JSON reply with the score and the
// symbols that hit (https://rspamd.com/doc/developers/protocol.html).
type rspamd struct {
	url     string
	timeout time.Duration
	maxSize int64
	client  *http.Client
}

func newRspamd(url string, timeout time.Duration, maxSize int64) *rspamd {
	// Its own transport: no proxy from the environment between the
	// gateway and its scanner, and idle connections it can close.
	return &rspamd{url: url, timeout: timeout, maxSize: maxSize,
		client: &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 4}}}
}

// maxReply bounds what is read of rspamd's reply, which also lists the
// URLs and addresses of the message.
const maxReply = 4 << 20

// rspamdReply is the part of the /checkv2 reply used here.
type rspamdReply struct {
	Score     *float64 `json:"score"`
	IsSkipped bool     `json:"is_skipped"`
	Symbols   map[string]struct {
		Score float64 `json:"score"`
	} `json:"symbols"`
}

func (d *rspamd) check(ctx context.Context, tx *stages.Transaction) (backendResult, error) {
	res := backendResult{name: "rspamd"}
	size, skipped := messageSize(tx, d.maxSize)
	if skipped != "" {
		res.skipped = skipped
		return res, nil
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	msg, err := tx.Message()
	if err != nil {
		return res, fmt.Errorf("rspamd: read message: %w", err)
	}
	defer msg.Close()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.url, msg)
	if err != nil {
		return res, fmt.Errorf("rspamd: %w", err)
	}
	req.ContentLength = size
	if tx.Client.Addr.IsValid() {
		req.Header.Set("IP", tx.Client.Addr.String())
	}
	setIf(req.Header, "Helo", tx.Client.Helo)
	setIf(req.Header, "Hostname", tx.Client.Name)
	setIf(req.Header, "User", tx.Client.AuthUser)
	setIf(req.Header, "Queue-Id", tx.QueueID)
	setIf(req.Header, "From", tx.From)
	for _, r := range tx.Rcpts {
		if headerSafe(r) != "" {
			req.Header.Add("Rcpt", headerSafe(r))
		}
	}
	resp, err := d.client.Do(req)
	if err != nil {
		return res, fmt.Errorf("rspamd: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return res, fmt.Errorf("rspamd: HTTP %s", resp.Status)
	}
	var reply rspamdReply
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxReply)).Decode(&reply); err != nil {
		return res, fmt.Errorf("rspamd: reply: %w", err)
	}
	if reply.IsSkipped {
		res.skipped = "rspamd skipped the message"
		return res, nil
	}
	if reply.Score == nil {
		return res, errors.New("rspamd: reply without a score")
	}
	res.score = *reply.Score
	for name := range reply.Symbols {
		res.symbols = append(res.symbols, name)
	}
	slices.Sort(res.symbols)
	return res, nil
}

// Close closes idle connections to rspamd.
func (d *rspamd) Close() error {
	d.client.CloseIdleConnections()
	return nil
}

func setIf(h http.Header, key, value string) {
	if v := headerSafe(value); v != "" {
		h.Set(key, v)
	}
}

// headerSafe keeps envelope values from breaking the request's header: they
// come from the SMTP client.
func headerSafe(v string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, v)
}
