package recstore

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/stages/redisconn"
)

// Redis is the Store the nodes of a cluster share: each record is a Redis
// key "mailgate:<kind>:<key in hex>" holding the 64 bytes the embedded
// store writes (encodeRecord), which Redis drops when it expires. Redis
// bounds its memory itself (maxmemory); the records are not bounded here.
// A value that does not decode (written by another version, say) is no
// record, and the next Put replaces it.
type Redis struct {
	c      *redisconn.Client
	prefix string
	now    func() time.Time
}

var _ Store = (*Redis)(nil)

// NewRedis returns the store of the records of kind ("greylist") in c's
// Redis; now is the user's clock, for expiry (nil: time.Now).
func NewRedis(c *redisconn.Client, kind string, now func() time.Time) *Redis {
	if now == nil {
		now = time.Now
	}
	return &Redis{c: c, prefix: "mailgate:" + kind + ":", now: now}
}

func (s *Redis) key(k Key) string { return s.prefix + hex.EncodeToString(k[:]) }

func (s *Redis) Get(ctx context.Context, k Key) (Record, bool, error) {
	b, err := s.c.Get(ctx, s.key(k)).Bytes()
	switch {
	case errors.Is(err, redis.Nil):
		return Record{}, false, nil
	case err != nil:
		return Record{}, false, fmt.Errorf("redis: %w", err)
	}
	got, r, st := decodeRecord(b)
	if st != slotUsed || got != k || expired(r, s.now()) {
		return Record{}, false, nil
	}
	return r, true, nil
}

// Put stores r until r.Expires by the user's clock, counted from now, so
// that Redis's clock need not agree with it; a record without Expires
// stays until it is deleted.
func (s *Redis) Put(ctx context.Context, k Key, r Record) error {
	var ttl time.Duration // 0: no expiry
	if !r.Expires.IsZero() {
		if ttl = r.Expires.Sub(s.now()); ttl < time.Millisecond {
			return s.Delete(ctx, k) // expired already
		}
	}
	b := encodeRecord(k, r)
	if err := s.c.Set(ctx, s.key(k), b[:], ttl).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}

func (s *Redis) Delete(ctx context.Context, k Key) error {
	if err := s.c.Del(ctx, s.key(k)).Err(); err != nil {
		return fmt.Errorf("redis: %w", err)
	}
	return nil
}
