package cluster

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"time"

	"github.com/emersion/go-smtp"

	"github.com/mailgate/mailgate/gateway/router"
	"github.com/mailgate/mailgate/stages/redisconn"
)

// Verdicts returns where the answers of verify_rcpts probes are kept in
// a cluster with Redis, so that a recipient one node asked about is known
// to every node; nil otherwise, and each router keeps its own.
func (n *Node) Verdicts() router.Verdicts {
	if n.redis == nil {
		return nil
	}
	return redisVerdicts{n.redis}
}

// redisVerdicts keeps each answer as a Redis key
// "mailgate:verify:<hash of route and recipient>" that expires with it;
// the value is the refusal (code, enhanced code, text), {} for a
// recipient the route takes. While Redis is away every Get is a miss
// (redisconn fails at once), and the route is asked.
type redisVerdicts struct{ c *redisconn.Client }

type storedVerdict struct {
	Code     int    `json:"code,omitempty"`
	Enhanced [3]int `json:"enhanced,omitzero"`
	Message  string `json:"message,omitempty"`
}

func (v redisVerdicts) key(k string) string {
	sum := sha256.Sum256([]byte(k))
	return "mailgate:verify:" + hex.EncodeToString(sum[:16])
}

func (v redisVerdicts) Get(ctx context.Context, key string) (*smtp.SMTPError, bool) {
	b, err := v.c.Get(ctx, v.key(key)).Bytes()
	var s storedVerdict
	if err != nil || json.Unmarshal(b, &s) != nil {
		return nil, false
	}
	if s.Code == 0 {
		return nil, true
	}
	return &smtp.SMTPError{Code: s.Code, EnhancedCode: smtp.EnhancedCode(s.Enhanced), Message: s.Message}, true
}

func (v redisVerdicts) Put(ctx context.Context, key string, refused *smtp.SMTPError, ttl time.Duration) {
	var s storedVerdict
	if refused != nil {
		s = storedVerdict{Code: refused.Code, Enhanced: refused.EnhancedCode, Message: refused.Message}
	}
	b, _ := json.Marshal(s)
	v.c.Set(ctx, v.key(key), b, ttl) // a failure is a miss next time
}
