package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
)

// Client calls the admin API of a running gateway.
type Client struct {
	base string
	hc   *http.Client
}

// NewClient returns a client of the API on addr, the host:port of the
// gateway's [admin] listen. An unspecified host (0.0.0.0, ::) is reached
// on loopback, the only place the API answers.
func NewClient(addr string) (*Client, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("admin address %q: %w", addr, err)
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	u := url.URL{Scheme: "http", Host: net.JoinHostPort(host, port)}
	return &Client{base: u.String(), hc: &http.Client{}}, nil
}

// Queue lists the queued messages.
func (c *Client) Queue(ctx context.Context) ([]*spool.Envelope, error) {
	var out []*spool.Envelope
	return out, c.call(ctx, http.MethodGet, "/api/queue", &out)
}

// QueuedMessage returns the envelope of a queued message.
func (c *Client) QueuedMessage(ctx context.Context, id string) (*spool.Envelope, error) {
	var out spool.Envelope
	return &out, c.call(ctx, http.MethodGet, "/api/queue/"+url.PathEscape(id), &out)
}

// QueueOp runs retry, hold, release or delete on a queued message.
func (c *Client) QueueOp(ctx context.Context, op, id string) error {
	if op == "delete" {
		return c.call(ctx, http.MethodDelete, "/api/queue/"+url.PathEscape(id), nil)
	}
	return c.call(ctx, http.MethodPost, "/api/queue/"+url.PathEscape(id)+"/"+url.PathEscape(op), nil)
}

// Quarantined lists the quarantined messages f selects.
func (c *Client) Quarantined(ctx context.Context, f state.Filter) ([]*state.QuarantineRecord, error) {
	q := url.Values{}
	for k, v := range map[string]string{"from": f.From, "rcpt": f.Rcpt, "stage": f.Stage} {
		if v != "" {
			q.Set(k, v)
		}
	}
	if f.OlderThan > 0 {
		q.Set("older", f.OlderThan.String())
	}
	if f.NewerThan > 0 {
		q.Set("newer", f.NewerThan.String())
	}
	path := "/api/quarantine"
	if len(q) > 0 {
		path += "?" + q.Encode()
	}
	var out []*state.QuarantineRecord
	return out, c.call(ctx, http.MethodGet, path, &out)
}

// QuarantineRecord returns the record of a quarantined message.
func (c *Client) QuarantineRecord(ctx context.Context, id string) (*state.QuarantineRecord, error) {
	var out state.QuarantineRecord
	return &out, c.call(ctx, http.MethodGet, "/api/quarantine/"+url.PathEscape(id), &out)
}

// QuarantineMessage copies a quarantined message to w.
func (c *Client) QuarantineMessage(ctx context.Context, id string, w io.Writer) error {
	resp, err := c.do(ctx, http.MethodGet, "/api/quarantine/"+url.PathEscape(id)+"/message")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(w, resp.Body)
	return err
}

// QuarantineRelease queues a quarantined message for delivery to rcpts
// (none: every recipient not released yet) and returns the queue ID of
// the copy.
func (c *Client) QuarantineRelease(ctx context.Context, id string, rcpts ...string) (string, error) {
	var out Released
	path := "/api/quarantine/" + url.PathEscape(id) + "/release"
	if len(rcpts) > 0 {
		path += "?" + url.Values{"rcpt": rcpts}.Encode()
	}
	err := c.call(ctx, http.MethodPost, path, &out)
	return out.QueueID, err
}

// QuarantineDelete deletes a quarantined message.
func (c *Client) QuarantineDelete(ctx context.Context, id string) error {
	return c.call(ctx, http.MethodDelete, "/api/quarantine/"+url.PathEscape(id), nil)
}

// Reload makes the gateway re-read its config file. The error carries the
// reason a config was refused.
func (c *Client) Reload(ctx context.Context) error {
	return c.call(ctx, http.MethodPost, "/api/reload", nil)
}

// Error is an error the API answered with.
type Error struct {
	Status  int
	Message string
}

func (e *Error) Error() string { return e.Message }

func (c *Client) call(ctx context.Context, method, path string, out any) error {
	resp, err := c.do(ctx, method, path)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if out == nil {
		return nil
	}
	if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
		return fmt.Errorf("admin API %s: %w", path, err)
	}
	return nil
}

// do sends a request and returns a 2xx response; any other is an *Error.
func (c *Client) do(ctx context.Context, method, path string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set(Header, "1")
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("admin API (is the gateway running?): %w", err)
	}
	if resp.StatusCode/100 == 2 {
		return resp, nil
	}
	defer resp.Body.Close()
	var body errorBody
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if json.Unmarshal(b, &body) != nil || body.Error == "" {
		body.Error = strings.TrimSpace(string(b))
	}
	return nil, &Error{Status: resp.StatusCode, Message: body.Error}
}
