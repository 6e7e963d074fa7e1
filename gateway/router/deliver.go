package router

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/address"
)

// result is what one attempt did for one recipient.
type result struct {
	idx       int // into Envelope.Rcpts
	status    spool.RcptStatus
	reply     string
	host      string
	abandoned bool // cut short by shutdown: the recipient is left as it was
}

// group is the pending recipients of a message that go the same way.
type group struct {
	route  *policy.Route // nil: no route, MX delivery
	domain string        // for MX delivery: the recipients' domain
	rcpts  []int
}

// groups splits the pending recipients of env by destination, keeping
// their order. A route with servers or a maildir takes all its
// recipients at once; MX delivery goes per domain.
func (c *conf) groups(env *spool.Envelope) []*group {
	type key struct {
		route  *policy.Route
		domain string
	}
	var out []*group
	seen := make(map[key]*group)
	for i, rc := range env.Rcpts {
		if rc.Status != spool.Pending {
			continue
		}
		// A recipient queued by an older version may have a domain in
		// another spelling: Fold makes it the one routes compare.
		_, d, _ := address.Split(rc.Addr)
		d = address.Fold(d)
		route, ok := c.table.Match(d)
		if !ok {
			route = nil
		}
		k := key{route: route}
		if route == nil || route.MX {
			k.domain = d
		}
		g := seen[k]
		if g == nil {
			g = &group{route: route, domain: k.domain}
			seen[k] = g
			out = append(out, g)
		}
		g.rcpts = append(g.rcpts, i)
	}
	return out
}

// attempt tries to deliver the pending recipients of env (a copy owned by
// the caller), one group after the other, and reports per recipient.
func (r *Router) attempt(ctx context.Context, env *spool.Envelope) []result {
	c := r.conf.Load()
	groups := c.groups(env)
	var out []result
	msg, err := r.sp.OpenMessage(env.ID)
	if err != nil {
		r.log.Error("open message", "queue_id", env.ID, "err", err)
		reply := replyOf(replyErr(451, 4, 3, 0, "queued message cannot be read"))
		for _, g := range groups {
			for _, i := range g.rcpts {
				out = append(out, result{idx: i, status: spool.Pending, reply: reply})
			}
		}
		return out
	}
	defer msg.Close()
	for _, g := range groups {
		if _, err := msg.Seek(0, io.SeekStart); err != nil {
			r.log.Error("read message", "queue_id", env.ID, "err", err)
			for _, i := range g.rcpts {
				out = append(out, result{idx: i, status: spool.Pending, reply: replyOf(replyErr(451, 4, 3, 0, "queued message cannot be read"))})
			}
			continue
		}
		if g.route != nil && g.route.Maildir != "" {
			out = append(out, r.toMaildir(c, env, g, msg)...)
			continue
		}
		out = append(out, r.toSMTP(ctx, c, env, g, msg)...)
	}
	return out
}

func (r *Router) toMaildir(c *conf, env *spool.Envelope, g *group, msg io.Reader) []result {
	out := make([]result, 0, len(g.rcpts))
	// Neither host nor reply names the directory: both may be quoted to
	// the sender in a DSN.
	host := "maildir"
	name, err := deliverMaildir(g.route.Maildir, env.ID, c.cfg.Hostname, env.From, msg)
	res := result{status: spool.Delivered, reply: "250 2.0.0 delivered as " + name, host: host}
	if err != nil {
		r.log.Error("maildir delivery", "queue_id", env.ID, "maildir", g.route.Maildir, "err", err)
		res = result{status: spool.Pending, reply: replyOf(replyErr(451, 4, 3, 0, "local delivery failed")), host: host}
	}
	for _, i := range g.rcpts {
		res.idx = i
		out = append(out, res)
	}
	r.note(env, out)
	return out
}

// note writes the final outcomes among results to the spool at once,
// before the Run goroutine gets to store the envelope: a crash in
// between must not deliver them again (see spool.Note). Recipients still
// pending need no mark: they are tried again anyway.
func (r *Router) note(env *spool.Envelope, results []result) {
	var p spool.Progress
	now := time.Now()
	for _, res := range results {
		if res.abandoned || res.status == spool.Pending {
			continue
		}
		p.Rcpts = append(p.Rcpts, spool.Outcome{Rcpt: res.idx, Status: res.status, LastReply: res.reply, LastHost: res.host, Updated: now})
	}
	if len(p.Rcpts) == 0 {
		return
	}
	if err := r.sp.Note(env.ID, p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		// Not fatal: the envelope is stored after the attempt anyway;
		// only a crash before that would repeat the delivery.
		r.log.Error("note delivery", "queue_id", env.ID, "err", err)
	}
}

// toSMTP delivers a group to the first of its hosts that takes a
// connection: the next host is tried on connection trouble and on a
// refused greeting or EHLO (RFC 5321 §5.1), not on replies within the
// transaction.
func (r *Router) toSMTP(ctx context.Context, cf *conf, env *spool.Envelope, g *group, msg io.Reader) []result {
	out := make([]result, 0, len(g.rcpts))
	all := func(err error, host string) []result {
		st := spool.Pending
		if isPermanent(err) {
			st = spool.Failed
		}
		for _, i := range g.rcpts {
			out = append(out, result{idx: i, status: st, reply: replyOf(err), host: host, abandoned: ctx.Err() != nil})
		}
		return out
	}

	mode, skipVerify := tlsOpportunistic, false
	if g.route != nil && g.route.TLS != "" {
		mode, skipVerify = g.route.TLS, g.route.TLSSkipVerify
	}
	var targets []target
	if g.route != nil && len(g.route.Servers) > 0 {
		for _, s := range g.route.Servers {
			host, _, err := net.SplitHostPort(s)
			if err != nil {
				host = s
			}
			targets = append(targets, target{addr: s, name: host})
		}
	} else {
		lctx, cancel := context.WithTimeout(ctx, cf.lookupTimeout())
		ts, err := cf.res.lookup(lctx, g.domain)
		cancel()
		if err != nil {
			return all(err, "")
		}
		targets = ts
	}

	rcpts := make([]string, len(g.rcpts))
	for k, i := range g.rcpts {
		rcpts[k] = env.Rcpts[i].Addr
	}
	var lastErr error
	var lastHost string
	for _, t := range targets {
		host := t.label()
		pool := cf.client.pool
		d := pool.dest(destKey{addr: t.addr, name: t.name, tls: mode, skipVerify: skipVerify})
		var s sent
		c, err := cf.client.transact(ctx, d, t, mode, skipVerify, func(c *conn) bool {
			s = cf.client.send(ctx, c, env.From, rcpts, env.Size, msg)
			return s.stale
		})
		if err != nil {
			pool.done(d)
			lastErr, lastHost = err, host
			r.log.Debug("connect", "queue_id", env.ID, "host", host, "err", err)
			if ctx.Err() != nil {
				break
			}
			continue
		}
		for k, i := range g.rcpts {
			err := s.errs[k]
			res := result{idx: i, status: spool.Delivered, reply: s.reply, host: host}
			switch {
			case err == nil:
			case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
				res = result{idx: i, status: spool.Pending, reply: replyOf(err), host: host, abandoned: true}
			case isPermanent(err):
				res.status, res.reply = spool.Failed, replyOf(err)
			default:
				res.status, res.reply = spool.Pending, replyOf(err)
			}
			out = append(out, res)
		}
		// The done-mark goes out before the connection does: a delivery
		// holds its connection slot until the spool has its mark, so a
		// crash repeats at most max_connections deliveries per
		// destination.
		r.note(env, out)
		if s.reusable {
			pool.put(d, c)
		} else {
			pool.drop(d, c)
		}
		pool.done(d)
		return out
	}
	return all(lastErr, lastHost)
}

// lookupTimeout bounds the DNS work for one destination: a few queries.
func (c *conf) lookupTimeout() time.Duration {
	return 4 * time.Duration(c.cfg.DNS.Timeout)
}

// label names the host for LastHost and logs: the name as it appears in
// the route or MX record, with the port.
func (t target) label() string {
	_, port, err := net.SplitHostPort(t.addr)
	if err != nil {
		return t.addr
	}
	return net.JoinHostPort(t.name, port)
}

// logAttrs are the attributes of an outcome line.
func logAttrs(env *spool.Envelope, rc *spool.Recipient, now time.Time) []any {
	return []any{
		slog.String("queue_id", env.ID),
		slog.String("rcpt", rc.Addr),
		slog.String("host", rc.LastHost),
		slog.String("reply", rc.LastReply),
		slog.Int("attempt", rc.Attempts),
		slog.Duration("delay", now.Sub(env.Received).Round(time.Millisecond)),
	}
}
