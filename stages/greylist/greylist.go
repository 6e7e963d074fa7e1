// Package greylist refuses mail from an unknown client network, sender and
// recipient (a triplet) with a temporary failure, and accepts the retry
// after a delay (RFC 6647): a real mail server retries (RFC 5321 §4.5.4.1),
// much spamware does not. It runs at RCPT, once per recipient. The state,
// triplets and networks, lives in a Store: by default files under the data
// directory (stages/recstore) that survive restarts and may be shared by the old
// and new plugin process across a reload; in a [cluster], Redis, shared
// by every node, so that a retry passes at any node. When the store fails, mail is
// not greylisted (fail open), logged and counted: mail flow never stops
// because a record cannot be written.
package greylist

import (
	"context"
	"fmt"
	"log/slog"
	"net/netip"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// The result words of a greylist verdict.
const (
	Greylisted  = "greylisted"  // refused for now: a new triplet, or a retry too early
	Passed      = "passed"      // a triplet retried after the delay, now or before
	Allowed     = "allowed"     // allow-listed, or the client network was auto-allowed
	Skipped     = "skipped"     // trusted, authenticated, or SPF pass
	Unavailable = "unavailable" // the store failed: not greylisted (fail open)
)

// Results returns the result words of a greylist verdict.
func Results() []string { return []string{Greylisted, Passed, Allowed, Skipped, Unavailable} }

// reply is the refusal of a greylisted recipient: a temporary failure
// (RFC 6647 §2.1, RFC 5321 §4.2.5) with the enhanced code of a policy
// refusal (RFC 3463 §3.8, X.7.1), and nothing of the reason.
var reply = stages.Reply{Code: 451, Enhanced: [3]int{4, 7, 1}, Text: "Greylisted, please try again later"}

// Filter is a configured greylist stage.
type Filter struct {
	store       Store
	redis       *redisconn.Client // the store's, in a cluster
	delay       time.Duration
	window      time.Duration
	expiry      time.Duration
	autoAllow   int
	v4, v6      int
	skipSPFPass bool
	allow       allowList
	now         func() time.Time
	log         *slog.Logger
	alarms      *alarms
}

var (
	_ stages.Filter = (*Filter)(nil)
	_ stages.Closer = (*Filter)(nil)
)

// Info declares the RCPT phase and the results of the earlier stages, for
// the spf verdict given at MAIL.
func (f *Filter) Info() stages.Info {
	return stages.Info{Kind: "greylist", Version: "1", Phases: stages.Rcpt, Needs: stages.NeedEnvelope | stages.NeedResults, Results: Results()}
}

// Run decides for the recipient being checked, the last of tx.Rcpts. A
// store that fails is never a stage error: the verdict is unavailable,
// continue.
func (f *Filter) Run(ctx context.Context, _ stages.Phase, tx *stages.Transaction) (stages.Verdict, error) {
	if len(tx.Rcpts) == 0 {
		return stages.Verdict{Result: Skipped, Reason: "no recipient"}, nil
	}
	rcpt := tx.Rcpts[len(tx.Rcpts)-1]
	ip := tx.Client.Addr.Unmap()
	switch {
	case tx.Client.Trusted:
		return stages.Verdict{Result: Skipped, Reason: "trusted client"}, nil
	case tx.Client.AuthUser != "":
		return stages.Verdict{Result: Skipped, Reason: "authenticated client"}, nil
	case !ip.IsValid():
		return stages.Verdict{Result: Skipped, Reason: "client address unknown"}, nil
	}
	if why := f.allow.match(ip, tx.From, rcpt); why != "" {
		return stages.Verdict{Result: Allowed, Reason: why}, nil
	}
	if f.skipSPFPass && spfPass(tx.Results) {
		return stages.Verdict{Result: Skipped, Reason: "SPF pass for the sender's domain"}, nil
	}
	network := f.network(ip)
	res, reason, err := f.decide(ctx, network, address.Identity(tx.From), address.Identity(rcpt))
	if err != nil {
		f.alarms.raise("store", "greylist: store failed; mail passes without greylisting (fail open)", "err", err)
		return stages.Verdict{Result: Unavailable, Reason: "store failed, not greylisted: " + err.Error()}, nil
	}
	v := stages.Verdict{Result: res, Reason: reason}
	if res == Greylisted {
		r := reply
		v.Action, v.Reply = stages.TempFail, &r
	}
	return v, nil
}

// spfPass reports whether an earlier spf stage passed the client for the
// sender's domain (for the null sender, the HELO name's).
func spfPass(results []stages.Result) bool {
	for _, r := range results {
		if r.Kind == "spf" && !r.Errored && r.Result == "pass" {
			return true
		}
	}
	return false
}

// network is the client's network as a triplet names it.
func (f *Filter) network(ip netip.Addr) string {
	bits := f.v6
	if ip.Is4() {
		bits = f.v4
	}
	p, _ := ip.Prefix(bits)
	return p.String()
}

// decide looks the triplet up and records what it learns. It returns the
// result word and the reason, or the store's error.
//
// The times are checked both ways, as the clock may jump: a triplet first
// seen "in the future" (the clock went back) starts over from now, so it
// neither passes early nor waits for the clock to catch up; a record last
// used in the future is refreshed to now. A clock jumping forward can only
// let a retry pass sooner or make it start over, as a late retry would.
func (f *Filter) decide(ctx context.Context, network, sender, rcpt string) (string, string, error) {
	now := f.now()
	nk := networkKey(network)
	if f.autoAllow > 0 {
		n, ok, err := f.store.Get(ctx, nk)
		if err != nil {
			return "", "", err
		}
		if ok && int(n.Count) >= f.autoAllow {
			if f.stale(n.Last, now) {
				n.Last, n.Expires = now, now.Add(f.expiry)
				f.refresh(ctx, nk, n)
			}
			return Allowed, fmt.Sprintf("client network %s auto-allowed after %d passes", network, n.Count), nil
		}
	}
	tk := tripletKey(network, sender, rcpt)
	t, ok, err := f.store.Get(ctx, tk)
	if err != nil {
		return "", "", err
	}
	triplet := fmt.Sprintf("(%s, <%s>, <%s>)", network, sender, rcpt)
	if ok && t.Passed {
		if f.stale(t.Last, now) {
			t.Last, t.Expires = now, now.Add(f.expiry)
			f.refresh(ctx, tk, t)
		}
		return Passed, "triplet " + triplet + " passed before", nil
	}
	age := now.Sub(t.First)
	switch {
	case !ok || age < 0 || age > f.window:
		// New, or the clock went back, or the retry came after the
		// window: (re)start the round.
		why := "new triplet"
		switch {
		case ok && age < 0:
			why = "triplet first seen after now (the clock went back); starting over:"
		case ok:
			why = fmt.Sprintf("triplet retried %v after its first attempt, past retry_window %v; starting over:", age.Round(time.Second), f.window)
		}
		rec := Record{First: now, Expires: now.Add(f.window)}
		if err := f.store.Put(ctx, tk, rec); err != nil {
			return "", "", err
		}
		return Greylisted, fmt.Sprintf("%s %s; retry accepted from %v on", why, triplet, f.delay), nil
	case age < f.delay:
		return Greylisted, fmt.Sprintf("triplet %s retried %v after its first attempt, before delay %v", triplet, age.Round(time.Second), f.delay), nil
	}
	t.Passed, t.Last, t.Expires = true, now, now.Add(f.expiry)
	if err := f.store.Put(ctx, tk, t); err != nil {
		return "", "", err
	}
	reason := fmt.Sprintf("triplet %s retried %v after its first attempt", triplet, age.Round(time.Second))
	if f.autoAllow > 0 {
		f.countPass(ctx, nk, network, now)
	}
	return Passed, reason, nil
}

// stale reports whether a record last used at last should be written
// again: when its expiry has run a while, so that a busy triplet costs a
// write now and then rather than one per message, or when last is after
// now (the clock went back).
func (f *Filter) stale(last, now time.Time) bool {
	return now.Before(last) || now.Sub(last) > f.expiry/64
}

// refresh writes a record whose expiry moves; failing, the record keeps
// its old expiry, which costs at most one more delay later.
func (f *Filter) refresh(ctx context.Context, k Key, r Record) {
	if err := f.store.Put(ctx, k, r); err != nil {
		f.alarms.raise("store", "greylist: store failed; a record keeps its old expiry", "err", err)
	}
}

// countPass adds a pass to the client network's count.
func (f *Filter) countPass(ctx context.Context, k Key, network string, now time.Time) {
	n, _, err := f.store.Get(ctx, k)
	if err == nil {
		n.Count++
		n.Last, n.Expires = now, now.Add(f.expiry)
		err = f.store.Put(ctx, k, n)
	}
	if err != nil {
		f.alarms.raise("store", "greylist: store failed; a pass of the network is not counted", "network", network, "err", err)
	}
}

// alarms logs store faults without flooding the log: the first of each
// kind at once, then at most one line a minute with the number since the
// last line. The totals are counted and logged with each line; a plugin
// process has no metrics of its own (README: Metrics).
type alarms struct {
	log *slog.Logger
	mu  sync.Mutex
	by  map[string]*alarm
}

type alarm struct {
	logged     time.Time // real time of the last line
	suppressed int
	total      int64
}

// alarmEvery is the least time between two lines of one kind of fault.
const alarmEvery = time.Minute

func newAlarms(log *slog.Logger) *alarms { return &alarms{log: log, by: map[string]*alarm{}} }

func (a *alarms) raise(kind, msg string, args ...any) {
	a.mu.Lock()
	al := a.by[kind]
	if al == nil {
		al = &alarm{}
		a.by[kind] = al
	}
	al.total++
	// Real time with its monotonic reading, not the filter's clock: how
	// often to log is no greylisting decision, and must not stall when
	// the wall clock jumps.
	if !al.logged.IsZero() && time.Since(al.logged) < alarmEvery {
		al.suppressed++
		a.mu.Unlock()
		return
	}
	args = append(args, "total", al.total, "since_last_line", al.suppressed+1)
	al.logged, al.suppressed = time.Now(), 0
	a.mu.Unlock()
	a.log.Warn(msg, args...)
}

// total returns how many faults of kind were raised.
func (a *alarms) total(kind string) int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	if al := a.by[kind]; al != nil {
		return al.total
	}
	return 0
}
