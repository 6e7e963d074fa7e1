package ratelimit

import (
	"context"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/mailgate/mailgate/stages/redisconn"
)

// Redis is the Store the nodes of a cluster share: the TAT of each key in
// Redis, under "mailgate:ratelimit:<key in hex>", expiring a minute after
// it passes (a key whose TAT has passed is as good as none; the minute is
// for a node whose clock is behind). One Lua script reads,
// decides and writes, which Redis runs alone: two nodes never both spend
// the last event of a burst, so a limit holds across the nodes together.
//
// The script is Limit.Take in microseconds, the finest unit Lua's
// numbers (doubles) hold exactly for today's times; intervals are rounded
// up to a whole microsecond. The clock is the caller's, so the nodes'
// clocks must agree (as NTP keeps them): a node whose clock is s ahead
// may pass s/Interval events more.
type Redis struct {
	c *redisconn.Client
}

var _ Store = (*Redis)(nil)

// NewRedis returns the Store kept in c's Redis.
func NewRedis(c *redisconn.Client) *Redis { return &Redis{c: c} }

// takeScript is Limit.Take on the TAT stored under KEYS[1], stored back
// when it changed as Table.Take does: ARGV are the interval, the burst
// and now (microseconds); it returns 1 when the event passes, 0 when not.
var takeScript = redis.NewScript(`
local iv = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local limit = now + iv * burst
local stored = tonumber(redis.call('GET', KEYS[1])) or 0
local tat = math.min(math.max(stored, now), limit)
local nxt, ok = tat + iv, 1
if nxt > limit then nxt, ok = tat, 0 end
if nxt ~= stored then
	redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.max(0, math.ceil((nxt - now) / 1000)) + 60000)
end
return ok
`)

// Take implements Store.
func (r *Redis) Take(ctx context.Context, k Key, lim Limit, now time.Time) (bool, error) {
	iv := max((lim.Interval+time.Microsecond-1)/time.Microsecond, 1)
	n, err := takeScript.Run(ctx, r.c, []string{"mailgate:ratelimit:" + hex.EncodeToString(k[:])},
		int64(iv), max(lim.Burst, 1), now.UnixMicro()).Int()
	if err != nil {
		return false, fmt.Errorf("redis: %w", err)
	}
	return n == 1, nil
}
