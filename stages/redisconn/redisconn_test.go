package redisconn

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/redistest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestCheck: the URL forms README.md (Cluster) documents are taken, each
// as the client kind it names, and what is wrong with a URL is said
// without its password.
func TestCheck(t *testing.T) {
	for _, tc := range []struct {
		url  string
		kind kind
	}{
		{"redis://cache.example.test:6379/0", single},
		{"rediss://user:pw@cache.example.test:6380/3?skip_verify=true", single},
		{"unix:///run/redis/redis.sock?db=2", single},
		{"redis://s1:26379/0?master_name=mymaster&addr=s2:26379&addr=s3:26379", sentinel},
		{"redis://n1:6379?addr=n2:6379&addr=n3:6379", cluster},
		{"redis://n1:6379/0?cluster=true", cluster},
	} {
		p, err := parse(tc.url)
		if err != nil || p.kind != tc.kind {
			t.Errorf("parse(%q) = kind %d, %v; want kind %d", tc.url, p.kind, err, tc.kind)
		}
	}
	for _, tc := range []struct{ url, want string }{
		{"memcached://h:11211", `scheme "memcached"`},
		{"redis:///0", "no host"},
		{"redis://:s3cret@h:6379/x", "invalid database number"},
		{"redis://:s3cret@h:6379/0?master_name=", "empty master_name"},
		{"redis://:s3cret@h:6379/1?cluster=true", "only database 0"},
		{"redis://:s3cret@h:6379/0?cluster=yes", `cluster="yes"`},
		{"redis://:s3cret@h:6379/0?bogus=1", "unexpected option: bogus"},
		{"redis://:s3cret@h:6379/0\x7f", "not a URL"},
	} {
		err := Check(tc.url)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "s3cret") {
			t.Errorf("Check(%q) = %v; want an error with %q and no password", tc.url, err, tc.want)
		}
	}
}

// TestFailFast: with Redis killed, the first command finds it away and
// the next ones fail at once with ErrDown (one log line, not one per
// command); once Redis is back, commands reach it again by themselves,
// and the log says so.
func TestFailFast(t *testing.T) {
	srv := redistest.Start(t)
	var logs testkit.SyncBuffer
	c, err := Open(stages.Redis{URL: srv.URL(), Timeout: 2 * time.Second, ConnectTimeout: time.Second},
		slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	if err := c.Get(ctx, "k").Err(); err == nil || errors.Is(err, ErrDown) {
		t.Fatalf("first command with Redis killed: %v; want the error that found it away", err)
	}
	if c.Err() == nil {
		t.Fatal("Err() = nil with Redis away")
	}
	start := time.Now()
	for range 1000 {
		if err := c.Get(ctx, "k").Err(); !errors.Is(err, ErrDown) {
			t.Fatalf("command with Redis away: %v; want ErrDown", err)
		}
		if time.Since(start) > retryAfter/2 {
			break // past here one command may probe
		}
	}
	if n := strings.Count(logs.String(), "redis unreachable"); n != 1 {
		t.Errorf("%d log lines say Redis is unreachable; want 1:\n%s", n, logs.String())
	}

	srv.Restart()
	deadline := time.Now().Add(30 * time.Second)
	for c.Health(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Redis not reached 30s after its restart: %v", c.Err())
		}
		time.Sleep(20 * time.Millisecond) // polling a condition, bounded by deadline
	}
	if c.Err() != nil || !strings.Contains(logs.String(), "redis answers again") {
		t.Fatalf("Err() = %v after Redis came back; log:\n%s", c.Err(), logs.String())
	}
}
