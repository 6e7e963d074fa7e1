// Package admin is the gateway's local admin API and its client: a JSON API
// under /api/ on the [admin] listener, next to /metrics and /healthz, that
// `mailgate queue`, `mailgate quarantine` and `mailgate reload` use, so
// that the running gateway stays the only process that changes its data
// dir.
//
//	GET    /api/queue                   queued messages (spool envelopes)
//	GET    /api/queue/{id}              one of them
//	POST   /api/queue/{id}/retry        deliver now
//	POST   /api/queue/{id}/hold         stop delivery attempts
//	POST   /api/queue/{id}/release      resume them
//	DELETE /api/queue/{id}              drop it, without a DSN
//	GET    /api/quarantine?from=&rcpt=&stage=&older=&newer=
//	GET    /api/quarantine/{id}         one record
//	GET    /api/quarantine/{id}/message the message itself
//	POST   /api/quarantine/{id}/release queue it for delivery, once (?rcpt=A&rcpt=B: to those only)
//	DELETE /api/quarantine/{id}
//	POST   /api/reload                  re-read the config file
//
// The API answers clients on loopback addresses only, whatever address the
// listener has, and a request that changes something must carry the
// header "Mailgate-Admin: 1": a web page cannot send that header to
// another origin without the browser asking first (CORS preflight), which
// this API never allows, so a page the operator visits cannot drive it.
//
// Every path on the listener answers only requests addressed to it: the
// Host must be the listener's configured name or address, the address the
// client connected to, or localhost on loopback. A page whose name an
// attacker rebinds to 127.0.0.1 (DNS rebinding) is the same origin as the
// API to the browser, so neither of the rules above stops it; its Host
// is the attacker's name, and it gets 421 Misdirected Request.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/state"
)

// Header must be set to "1" on requests that change something.
const Header = "Mailgate-Admin"

// Backend is the running gateway as the API sees it.
type Backend interface {
	Queue() ([]*spool.Envelope, error)
	QueuedMessage(id string) (*spool.Envelope, error)
	// QueueOp runs retry, hold, release or delete on a queued message.
	QueueOp(ctx context.Context, op, id string) error

	Quarantined(ctx context.Context, f state.Filter) ([]*state.QuarantineRecord, error)
	QuarantineRecord(ctx context.Context, id string) (*state.QuarantineRecord, error)
	// QuarantineMessage's reader may read under ctx: read it before ctx
	// ends.
	QuarantineMessage(ctx context.Context, id string) (io.ReadCloser, error)
	// QuarantineRelease queues a quarantined message for rcpts (none:
	// every recipient not released yet) and returns the queue ID of the
	// copy.
	QuarantineRelease(ctx context.Context, id string, rcpts []string) (string, error)
	QuarantineDelete(ctx context.Context, id string) error

	Reload(ctx context.Context) error
	// Health reports on each part the gateway needs to take mail.
	Health() Health
}

// Health is the state of each part the gateway needs to take mail.
type Health []Check

// Check is the state of one part.
type Check struct {
	Name   string // "spool", "delivery", "quarantine", "stage <name>"
	Status Status
	Detail string // what it is doing, or why it is not
	// Since is when the part stopped working, where it is known (the
	// engines of a cluster); zero otherwise.
	Since time.Time `json:",omitzero"`
}

// Status is how a part stands.
type Status string

const (
	OK Status = "ok"
	// Degraded: the part is not working, but mail is taken without it
	// (a stage whose on_error lets mail through).
	Degraded Status = "degraded"
	// Down: mail cannot be taken while the part is in this state.
	Down Status = "down"
)

// Down returns the checks that stop mail from being taken.
func (h Health) Down() []Check {
	var out []Check
	for _, c := range h {
		if c.Status == Down {
			out = append(out, c)
		}
	}
	return out
}

// Summary is the health in a line: "ok", or "degraded: " or "down: " and
// the parts that are (down ones only when any is), as a node reports
// itself to its cluster.
func (h Health) Summary() string {
	var down, degraded []string
	for _, c := range h {
		switch c.Status {
		case Down:
			down = append(down, c.Name)
		case Degraded:
			degraded = append(degraded, c.Name)
		}
	}
	switch {
	case len(down) > 0:
		return "down: " + strings.Join(down, ", ")
	case len(degraded) > 0:
		return "degraded: " + strings.Join(degraded, ", ")
	}
	return "ok"
}

// String is the /healthz body: "ok", or "unhealthy: " and the reasons,
// on the first line, then a line per part.
func (h Health) String() string {
	var b strings.Builder
	if down := h.Down(); len(down) == 0 {
		b.WriteString("ok\n")
	} else {
		var why []string
		for _, c := range down {
			why = append(why, c.Name+": "+c.Detail)
		}
		b.WriteString("unhealthy: " + strings.Join(why, "; ") + "\n")
	}
	for _, c := range h {
		fmt.Fprintf(&b, "%s: %s: %s\n", c.Name, c.Status, c.Detail)
	}
	return b.String()
}

// Handler serves the API, /healthz (200 "ok", or 503 "unhealthy" and why,
// then the state of each part) and /metrics with the given handler, to
// requests addressed to listen, the listener's configured address (see
// the package comment).
func Handler(b Backend, metrics http.Handler, listen string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		h := b.Health()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if len(h.Down()) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, h.String())
	})

	api := http.NewServeMux()
	api.HandleFunc("GET /api/queue", func(w http.ResponseWriter, r *http.Request) {
		envs, err := b.Queue()
		reply(w, envs, err)
	})
	api.HandleFunc("GET /api/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		env, err := b.QueuedMessage(r.PathValue("id"))
		reply(w, env, err)
	})
	api.HandleFunc("POST /api/queue/{id}/{op}", func(w http.ResponseWriter, r *http.Request) {
		op := r.PathValue("op")
		if op != "retry" && op != "hold" && op != "release" {
			replyError(w, http.StatusNotFound, fmt.Errorf("unknown operation %q; expect retry, hold or release", op))
			return
		}
		reply(w, done{OK: true}, b.QueueOp(r.Context(), op, r.PathValue("id")))
	})
	api.HandleFunc("DELETE /api/queue/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, done{OK: true}, b.QueueOp(r.Context(), "delete", r.PathValue("id")))
	})
	api.HandleFunc("GET /api/quarantine", func(w http.ResponseWriter, r *http.Request) {
		f, err := parseFilter(r)
		if err != nil {
			replyError(w, http.StatusBadRequest, err)
			return
		}
		recs, err := b.Quarantined(r.Context(), f)
		reply(w, recs, err)
	})
	api.HandleFunc("GET /api/quarantine/{id}", func(w http.ResponseWriter, r *http.Request) {
		rec, err := b.QuarantineRecord(r.Context(), r.PathValue("id"))
		reply(w, rec, err)
	})
	api.HandleFunc("GET /api/quarantine/{id}/message", func(w http.ResponseWriter, r *http.Request) {
		m, err := b.QuarantineMessage(r.Context(), r.PathValue("id"))
		if err != nil {
			reply(w, nil, err)
			return
		}
		defer m.Close()
		w.Header().Set("Content-Type", "message/rfc822")
		io.Copy(w, m)
	})
	api.HandleFunc("POST /api/quarantine/{id}/release", func(w http.ResponseWriter, r *http.Request) {
		id, err := b.QuarantineRelease(r.Context(), r.PathValue("id"), r.URL.Query()["rcpt"])
		reply(w, Released{QueueID: id}, err)
	})
	api.HandleFunc("DELETE /api/quarantine/{id}", func(w http.ResponseWriter, r *http.Request) {
		reply(w, done{OK: true}, b.QuarantineDelete(r.Context(), r.PathValue("id")))
	})
	api.HandleFunc("POST /api/reload", func(w http.ResponseWriter, r *http.Request) {
		reply(w, done{OK: true}, b.Reload(r.Context()))
	})
	mux.Handle("/api/", guard(api))
	return hostGuard(listen, mux)
}

// hostGuard answers 421 Misdirected Request (RFC 9110 §15.5.20) to a
// request whose Host is not the listener's own: its configured host (a
// name or an address), the address the client connected to, or
// localhost, 127.0.0.1 or [::1] when that is a loopback address, each
// with the port the client connected to. The body is generic: the Host
// is the client's text, not echoed.
func hostGuard(listen string, next http.Handler) http.Handler {
	cfgHost, cfgPort, _ := net.SplitHostPort(listen)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		local, _ := r.Context().Value(http.LocalAddrContextKey).(net.Addr)
		if !ownHost(r.Host, cfgHost, cfgPort, local) {
			replyError(w, http.StatusMisdirectedRequest, errors.New("misdirected request: the admin listener answers requests addressed to itself only"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// ownHost reports whether host, a request's Host, names the listener
// configured as cfgHost:cfgPort that the client reached at local (nil if
// unknown).
func ownHost(host, cfgHost, cfgPort string, local net.Addr) bool {
	name, port, err := net.SplitHostPort(host)
	if err != nil {
		// No port: the scheme's default (RFC 9110 §4.2.1).
		name, port = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"), "80"
	}
	if name == "" {
		return false
	}
	var localIP netip.Addr
	wantPort := cfgPort
	if ap, err := netip.ParseAddrPort(addrString(local)); err == nil {
		localIP, wantPort = ap.Addr().Unmap(), strconv.Itoa(int(ap.Port()))
	} else if ip, err := netip.ParseAddr(cfgHost); err == nil {
		localIP = ip.Unmap()
	}
	if port != wantPort {
		return false
	}
	if ip, err := netip.ParseAddr(name); err == nil {
		// An address is never a rebound name: any loopback one will do
		// on loopback.
		ip = ip.Unmap()
		return ip == localIP || ip.IsLoopback() && localIP.IsLoopback()
	}
	switch {
	case strings.EqualFold(name, "localhost"):
		return localIP.IsLoopback() || strings.EqualFold(cfgHost, "localhost")
	case cfgHost != "":
		return strings.EqualFold(name, cfgHost)
	}
	return false
}

func addrString(a net.Addr) string {
	if a == nil {
		return ""
	}
	return a.String()
}

// Released is the answer to a quarantine release.
type Released struct {
	QueueID string `json:"queue_id"`
}

// done is the answer to a call that returns nothing.
type done struct {
	OK bool `json:"ok"`
}

// guard lets through loopback clients only, and changes only with Header.
func guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if a, err := netip.ParseAddr(host); err != nil || !a.Unmap().IsLoopback() {
			replyError(w, http.StatusForbidden, errors.New("the admin API answers loopback clients only"))
			return
		}
		if r.Method != http.MethodGet && r.Method != http.MethodHead && r.Header.Get(Header) != "1" {
			replyError(w, http.StatusForbidden, fmt.Errorf("missing header %s: 1", Header))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func parseFilter(r *http.Request) (state.Filter, error) {
	q := r.URL.Query()
	f := state.Filter{From: q.Get("from"), Rcpt: q.Get("rcpt"), Stage: q.Get("stage")}
	for _, d := range []struct {
		key string
		dst *time.Duration
	}{{"older", &f.OlderThan}, {"newer", &f.NewerThan}} {
		if v := q.Get(d.key); v != "" {
			t, err := time.ParseDuration(v)
			if err != nil {
				return f, fmt.Errorf("%s: %w", d.key, err)
			}
			*d.dst = t
		}
	}
	return f, nil
}

// status maps an error to the HTTP status that tells the client what kind
// of failure it was.
func status(err error) int {
	switch {
	case errors.Is(err, fs.ErrNotExist), errors.Is(err, spool.ErrNotFound), errors.Is(err, state.ErrNotQuarantined):
		return http.StatusNotFound
	case errors.Is(err, state.ErrAlreadyReleased), errors.Is(err, state.ErrReleasing):
		return http.StatusConflict
	case errors.Is(err, state.ErrNotRecipient):
		return http.StatusBadRequest
	}
	return http.StatusInternalServerError
}

func reply(w http.ResponseWriter, v any, err error) {
	if err != nil {
		replyError(w, status(err), err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

type errorBody struct {
	Error string `json:"error"`
}

func replyError(w http.ResponseWriter, code int, err error) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(errorBody{Error: err.Error()})
}
