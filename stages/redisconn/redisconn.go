// Package redisconn is the one way mailgate talks to Redis: the nodes of
// a [cluster] share their small, fast-changing state there (the rate
// limits' counters of policy/ratelimit, greylisting's triplets and the
// pre-greet cache of stages/recstore). One URL names a single server, a
// master watched by Sentinels, or a Redis Cluster; Valkey speaks the
// same protocol.
//
// Redis is never allowed to stop mail. A Client fails fast while Redis is
// unreachable: after a command fails for want of an answer (refused,
// reset, timed out), the commands of the next second fail at once with
// ErrDown, and then one command at a time tries Redis again, until one
// gets an answer (stages/failfast). Each user fails open on an error (a limit passes, a
// triplet is not greylisted) and says so in its log and metrics; none
// needs to be told that Redis is back.
package redisconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/failfast"
)

// URL forms (README: Cluster):
//
//	redis://[user:password@]host:port[/db]        one server; rediss:// over TLS
//	unix:///run/redis.sock?db=0                   one server on a Unix socket
//	redis://s1:26379/0?master_name=mymaster&addr=s2:26379
//	                                              Sentinels watching master "mymaster"
//	redis://n1:6379?addr=n2:6379&addr=n3:6379     a Redis Cluster: the nodes to start from
//	redis://n1:6379?cluster=true                  a Redis Cluster known by one node
//
// Other query parameters are go-redis's own (skip_verify=true,
// client_name, …); an unknown one is an error.

// kind is what a URL names.
type kind int

const (
	single kind = iota
	sentinel
	cluster
)

// parsed is a URL read: the options of the client of its kind.
type parsed struct {
	kind     kind
	single   *redis.Options
	failover *redis.FailoverOptions
	cluster  *redis.ClusterOptions
}

// Check reports whether raw is a Redis URL a Client can be opened with,
// and what is wrong with it if not. The error never quotes raw, which
// may hold a password.
func Check(raw string) error {
	_, err := parse(raw)
	return err
}

func parse(raw string) (parsed, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url's errors quote the URL, password and all.
		return parsed{}, errors.New("not a URL")
	}
	q := u.Query()
	switch {
	case u.Scheme != "redis" && u.Scheme != "rediss" && u.Scheme != "unix":
		return parsed{}, fmt.Errorf("scheme %q; expect redis, rediss or unix", u.Scheme)
	case u.Scheme != "unix" && u.Host == "":
		return parsed{}, errors.New("no host")
	case q.Has("master_name"):
		if q.Get("master_name") == "" {
			return parsed{}, errors.New("empty master_name")
		}
		o, err := redis.ParseFailoverURL(raw)
		return parsed{kind: sentinel, failover: o}, err
	case q.Has("cluster") || q.Has("addr"):
		if c := q.Get("cluster"); c != "" && c != "true" {
			return parsed{}, fmt.Errorf("cluster=%q; expect cluster=true", c)
		}
		if u.Path != "" && u.Path != "/" && u.Path != "/0" {
			return parsed{}, errors.New("a database other than 0: a Redis Cluster has only database 0")
		}
		q.Del("cluster")
		u.RawQuery, u.Path = q.Encode(), ""
		o, err := redis.ParseClusterURL(u.String())
		return parsed{kind: cluster, cluster: o}, err
	}
	o, err := redis.ParseURL(raw)
	return parsed{kind: single, single: o}, err
}

// retryAfter is how long a Client fails fast after a command found Redis
// unreachable, before it lets one command try again.
const retryAfter = time.Second

// ErrDown is what a command gets at once while Redis is unreachable.
var ErrDown = errors.New("redis unreachable")

// go-redis logs to stderr through a logger of its own, one for the whole
// process; what it says (a dial failed) a Client says once, in the
// node's log. Its lines go to the default logger's debug level.
func init() { redis.SetLogger(goRedisLog{}) }

type goRedisLog struct{}

func (goRedisLog) Printf(ctx context.Context, format string, v ...any) {
	slog.Default().DebugContext(ctx, "redis: "+fmt.Sprintf(format, v...))
}

// Client is a Redis client that fails fast while Redis is unreachable.
// Its commands are go-redis's (it embeds redis.UniversalClient).
type Client struct {
	redis.UniversalClient

	failures atomic.Uint64 // commands that found Redis away, or failed fast
	gate     *failfast.Gate
}

// Open returns a client of the server, Sentinels or Cluster that r.URL
// names, with r's settings, which win over what the URL's query sets
// (zero: 5s, 5s, 10 connections to each server). It connects when a
// command needs a connection, so Redis need not be up. log hears when
// Redis becomes unreachable and when it is back; nil logs nothing.
func Open(r stages.Redis, log *slog.Logger) (*Client, error) {
	p, err := parse(r.URL)
	if err != nil {
		return nil, fmt.Errorf("redis URL: %w", err)
	}
	o := r
	if o.Timeout <= 0 {
		o.Timeout = 5 * time.Second
	}
	if o.ConnectTimeout <= 0 {
		o.ConnectTimeout = 5 * time.Second
	}
	if o.MaxConns <= 0 {
		o.MaxConns = 10
	}
	c := &Client{gate: failfast.New(failfast.Config{Down: ErrDown, Retry: retryAfter, Log: log,
		Away: "redis unreachable; what is kept there fails open (rate limits pass, greylisting and the pre-greet cache are skipped) until it answers",
		Back: "redis answers again"})}
	// go-redis retries a failed command 3 times by default: at most once
	// here, so that a command is bounded by about two timeouts and the
	// fail-fast state learns of a failure soon.
	switch p.kind {
	case single:
		s := p.single
		s.DialTimeout, s.ReadTimeout, s.WriteTimeout, s.PoolSize, s.MaxRetries = o.ConnectTimeout, o.Timeout, o.Timeout, o.MaxConns, 1
		c.UniversalClient = redis.NewClient(s)
	case sentinel:
		f := p.failover
		f.DialTimeout, f.ReadTimeout, f.WriteTimeout, f.PoolSize, f.MaxRetries = o.ConnectTimeout, o.Timeout, o.Timeout, o.MaxConns, 1
		c.UniversalClient = redis.NewFailoverClient(f)
	case cluster:
		k := p.cluster
		k.DialTimeout, k.ReadTimeout, k.WriteTimeout, k.PoolSize, k.MaxRetries = o.ConnectTimeout, o.Timeout, o.Timeout, o.MaxConns, 1
		c.UniversalClient = redis.NewClusterClient(k)
	}
	c.AddHook(c)
	return c, nil
}

// Err is nil while Redis answers, and the error that found it
// unreachable otherwise.
func (c *Client) Err() error { return c.gate.Err() }

// DownSince is when Redis was found unreachable, while Err is not nil;
// zero otherwise.
func (c *Client) DownSince() time.Time { return c.gate.DownSince() }

// Failures is how many commands found Redis unreachable or failed fast
// while it was: each one's user failed open.
func (c *Client) Failures() uint64 { return c.failures.Load() }

// Health pings Redis (at once ErrDown while it is known to be
// unreachable) and returns nil or why it is not usable.
func (c *Client) Health(ctx context.Context) error { return c.Ping(ctx).Err() }

// admitted marks the context of a command admit let through. go-redis
// sets a new connection up (HELLO, SELECT, …) with commands of its own
// that pass the hooks too, under the context of the command that needs
// the connection: they are part of that command, not commands to admit
// (or a probe would be refused its own set-up).
type admitted struct{}

// judge tells from a command's error whether Redis answered (nil, a
// missing key, an error reply such as NOSCRIPT) or did not (refused,
// reset, timed out). A command its caller cancelled tells neither.
func judge(err error) (answered, down bool) {
	var re redis.Error
	switch {
	case err == nil, errors.Is(err, redis.Nil), errors.As(err, &re):
		return true, false
	case errors.Is(err, context.Canceled):
		return false, false
	}
	return false, true
}

// DialHook, ProcessHook and ProcessPipelineHook make Client a
// redis.Hook: every command passes admit and settle.
func (c *Client) DialHook(next redis.DialHook) redis.DialHook { return next }

func (c *Client) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		return c.around(ctx, func(ctx context.Context) error { return next(ctx, cmd) }, cmd)
	}
}

func (c *Client) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		return c.around(ctx, func(ctx context.Context) error { return next(ctx, cmds) }, cmds...)
	}
}

// around runs a command, or a pipeline of them, between admit and settle.
func (c *Client) around(ctx context.Context, run func(context.Context) error, cmds ...redis.Cmder) error {
	if ctx.Value(admitted{}) != nil {
		return run(ctx)
	}
	probe, err := c.gate.Admit()
	if err != nil {
		c.failures.Add(1)
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
		return err
	}
	settled := false
	defer func() {
		if !settled { // run panicked: the gate must not wait for this probe for ever
			c.gate.Settle(probe, nil, false, false)
		}
	}()
	err = run(context.WithValue(ctx, admitted{}, true))
	settled = true
	answered, down := judge(err)
	if down {
		c.failures.Add(1)
	}
	if c.gate.Settle(probe, err, answered, down) {
		// A probe that failed: Redis is still away, as ErrDown says.
		err = fmt.Errorf("%w: %v", ErrDown, err)
		for _, cmd := range cmds {
			cmd.SetErr(err)
		}
	}
	return err
}

var _ redis.Hook = (*Client)(nil)
