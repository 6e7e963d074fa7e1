package router

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/address"
)

// How long answers of a route's servers about a recipient are kept, as
// Postfix's address_verify_positive_expire_time and
// address_verify_negative_expire_time (shorter here: a new mailbox should
// not wait long to get mail), and how many are kept at most.
const (
	verifyKnownFor   = time.Hour
	verifyUnknownFor = 10 * time.Minute
	verifyCacheSize  = 20000
	// verifyDownFor is how long a route whose servers did not answer a
	// probe is not asked again.
	verifyDownFor = 30 * time.Second
	// verifySharedLocalFor is how long a node keeps an answer it read
	// from the cluster's shared ones (SharedVerdicts).
	verifySharedLocalFor = time.Minute
)

// verifyCache keeps the answers of recipient probes.
type verifyCache struct {
	mu      sync.Mutex
	entries map[string]verdict
}

type verdict struct {
	refused error // the refusal of the next hop; nil: it takes the recipient
	expires time.Time
}

func (vc *verifyCache) get(key string, now time.Time) (verdict, bool) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	v, ok := vc.entries[key]
	if !ok || now.After(v.expires) {
		return verdict{}, false
	}
	return v, true
}

// put keeps v. A full cache first forgets expired answers, then, if that
// is not enough, some others: a probe costs little, memory without bound
// (a dictionary attack) would.
func (vc *verifyCache) put(key string, v verdict, now time.Time) {
	vc.mu.Lock()
	defer vc.mu.Unlock()
	if vc.entries == nil {
		vc.entries = make(map[string]verdict)
	}
	if len(vc.entries) >= verifyCacheSize {
		for k, e := range vc.entries {
			if now.After(e.expires) {
				delete(vc.entries, k)
			}
		}
		for k := range vc.entries {
			if len(vc.entries) < verifyCacheSize*9/10 {
				break
			}
			delete(vc.entries, k)
		}
	}
	vc.entries[key] = v
}

// Verdicts keep what recipient probes found, each for its time to live:
// refused is the next hop's permanent refusal, nil when it takes the
// recipient. The nodes of a cluster share them (in Redis,
// gateway/cluster), so that a recipient one node asked about is known to
// every node. A store that fails is a miss, and the route is asked: a
// probe costs a round trip, mail never waits for the store.
type Verdicts interface {
	Get(ctx context.Context, key string) (refused *smtp.SMTPError, ok bool)
	Put(ctx context.Context, key string, refused *smtp.SMTPError, ttl time.Duration)
}

// ErrUnverified is wrapped by the error of VerifyRcpt when the route's
// servers could not tell whether they take a recipient.
var ErrUnverified = errors.New("recipient not verified")

// errRouteDown is why a recipient is not asked about: no server of its
// route answered a probe lately.
var errRouteDown = errors.New("no server of the route answered a probe lately")

// Routes is the route table in force, as the SMTP server asks it
// whether a domain may be relayed and whether a recipient exists.
type Routes struct {
	r *Router
	t *policy.RouteTable
}

// Routes returns the route table in force now; a reload does not change
// what it answers, so a session keeps the routes it started with.
func (r *Router) Routes() Routes { return Routes{r, r.conf.Load().table} }

// HasRoute reports whether mail for domain may be taken from any client
// (policy.RouteTable.Relays).
func (rs Routes) HasRoute(domain string) bool { return rs.t.Relays(domain) }

// VerifyRcpt asks addr's route whether it takes addr, when the route
// verifies recipients (verify_rcpts); see Router.VerifyRcpt.
func (rs Routes) VerifyRcpt(ctx context.Context, addr string) error {
	_, domain, _ := address.Split(addr)
	route, ok := rs.t.Match(domain)
	if !ok || !route.VerifyRcpts {
		return nil
	}
	return rs.r.VerifyRcpt(ctx, route, addr)
}

// VerifyRcpt asks route's servers whether they take mail for addr, as
// Postfix's reject_unverified_recipient: MAIL FROM:<>, RCPT TO:<addr> and
// RSET on a pooled connection, servers in order as for delivery. It
// returns nil when they take addr; their reply (a 5xx *smtp.SMTPError)
// when they refused it for good: mail to it would bounce, and the bounce
// would go to a sender that may be forged (backscatter). When they could
// not tell (a 4xx, no answer), the recipient is unverified: the error
// wraps ErrUnverified, unless the route takes unverified recipients
// (verify_rcpts_unverified = "accept"), and then it is nil. Answers are
// cached, known recipients for an hour, refused ones for ten minutes;
// temporary ones are not. A route whose servers did not answer is not
// asked again for verifyDownFor, and meanwhile every recipient that is
// not known from the cache is unverified. In a cluster the answers are
// the nodes' together (SharedVerdicts), asked after the node's own memory
// and kept there a minute; whether a route answered is each node's own.
func (r *Router) VerifyRcpt(ctx context.Context, route *policy.Route, addr string) error {
	servers := strings.Join(route.Servers, ",")
	key := servers + "\x00" + addr
	down := servers + "\x00" // the route did not answer a probe lately
	now := time.Now()
	if v, ok := r.verified.get(key, now); ok {
		return v.refused
	}
	if r.shared != nil {
		if refused, ok := r.shared.Get(ctx, key); ok {
			var err error
			if refused != nil {
				err = refused
			}
			// Kept here a short while too, so that a busy recipient costs
			// Redis one look-up a minute, not one each RCPT.
			r.verified.put(key, verdict{refused: err, expires: now.Add(verifySharedLocalFor)}, now)
			return err
		}
	}
	if _, ok := r.verified.get(down, now); ok {
		return r.unverified(route, addr, errRouteDown)
	}
	known, answered, err := r.probe(ctx, route, addr)
	var refusal *smtp.SMTPError
	switch {
	case known:
		r.verified.put(key, verdict{expires: now.Add(verifyKnownFor)}, now)
		if r.shared != nil {
			r.shared.Put(ctx, key, nil, verifyKnownFor)
		}
		return nil
	case isPermanent(err):
		r.verified.put(key, verdict{refused: err, expires: now.Add(verifyUnknownFor)}, now)
		if r.shared != nil && errors.As(err, &refusal) {
			r.shared.Put(ctx, key, refusal, verifyUnknownFor)
		}
		return err
	case !answered && !errors.Is(ctx.Err(), context.Canceled):
		// No server answered (down, hung, or slower than the probe's
		// deadline): do not ask again for a while, rather than make
		// every RCPT wait for the probe to time out again. A probe
		// cancelled because the client left says nothing of the route.
		r.verified.put(down, verdict{expires: now.Add(verifyDownFor)}, now)
		r.log.Warn("recipient verification: no server of the route answered", "rcpt", addr, "err", err, "for", verifyDownFor)
	}
	return r.unverified(route, addr, err)
}

// unverified is what VerifyRcpt returns for a recipient the route's
// servers could not verify, err saying why.
func (r *Router) unverified(route *policy.Route, addr string, err error) error {
	if route.VerifyRcptsUnverified == "accept" {
		r.log.Debug("recipient taken unverified", "rcpt", addr, "err", err)
		return nil
	}
	return fmt.Errorf("%w: %w", ErrUnverified, err)
}

// probe asks the first server of route that takes a connection about
// addr. known is true when it accepted the recipient; answered when a
// server replied at all (anything but 421); err is the refusal, or what
// kept the question from being asked.
func (r *Router) probe(ctx context.Context, route *policy.Route, addr string) (known, answered bool, err error) {
	cf := r.conf.Load()
	mode := tlsOpportunistic
	if route.TLS != "" {
		mode = route.TLS
	}
	err = errors.New("no server of the route")
	for _, s := range route.Servers {
		host, _, serr := net.SplitHostPort(s)
		if serr != nil {
			host = s
		}
		t := target{addr: s, name: host}
		pool := cf.client.pool
		d := pool.dest(destKey{addr: t.addr, name: t.name, tls: mode, skipVerify: route.TLSSkipVerify})
		var reusable bool
		c, cerr := cf.client.transact(ctx, d, t, mode, route.TLSSkipVerify, func(c *conn) (stale bool) {
			known, answered, reusable, stale, err = askRcpt(ctx, c, addr)
			return stale
		})
		if cerr != nil {
			pool.done(d)
			err = cerr
			if ctx.Err() != nil {
				return false, false, err
			}
			continue
		}
		if reusable {
			pool.put(d, c)
		} else {
			pool.drop(d, c)
		}
		pool.done(d)
		return known, answered, err
	}
	return false, false, err
}

// askRcpt runs MAIL FROM:<>, RCPT TO:<addr> and RSET: a transaction that
// never gets to DATA delivers nothing (RFC 5321 §4.1.1.5). The null
// sender is what the server would see from a bounce, so it answers as it
// would for one. err is the reply to RCPT, or why RCPT was not asked;
// answered is true when the server replied (anything but 421); stale
// when it did not, to MAIL (see transact).
func askRcpt(ctx context.Context, c *conn, addr string) (known, answered, reusable, stale bool, err error) {
	cerr := c.withContext(ctx, func() error {
		var opts *smtp.MailOptions
		if !address.IsASCII(addr) {
			if ok, _ := c.c.Extension("SMTPUTF8"); !ok {
				// Delivery would fail for good the same way (send).
				err, answered, reusable = replyErr(553, 5, 6, 7, "next hop does not support SMTPUTF8"), true, true
				return nil
			}
			opts = &smtp.MailOptions{UTF8: true}
		}
		if merr := c.c.Mail("", opts); merr != nil {
			// %v: a refused MAIL says nothing about the recipient.
			err = fmt.Errorf("MAIL FROM:<> refused: %v", merr)
			answered = isReply(merr)
			stale = !answered
			reusable = answered && c.c.Reset() == nil
			return nil
		}
		err = c.c.Rcpt(quoteAddr(addr), nil)
		known = err == nil
		answered = known || isReply(err)
		reusable = answered && c.c.Reset() == nil
		return nil
	})
	if cerr != nil {
		// ctx ended and closed the connection.
		return false, false, false, false, cerr
	}
	return known, answered, reusable, stale, err
}
