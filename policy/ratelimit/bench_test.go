package ratelimit

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// BenchmarkCheck is the cost of the rate limits per message: a message
// with one recipient from one of 10,000 clients and senders, checked at
// MAIL against a client_ip, a client_net and a sender rule and at RCPT
// against a recipient rule, in the embedded table, as the gateway runs
// them (make bench).
func BenchmarkCheck(b *testing.B) {
	r := New(loadRules(b, `
[[ratelimit]]
name = "ip"
key = "client_ip"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "net"
key = "client_net"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "sender"
key = "sender"
rate = 1000000
per = "1s"

[[ratelimit]]
name = "rcpt"
key = "recipient"
rate = 1000000
per = "1s"
`), Env{})
	const n = 10000
	evs := make([]Event, n)
	for i := range evs {
		a := netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)})
		evs[i] = Event{Client: stages.Client{Addr: a}, From: fmt.Sprintf("user%d@sender%d.test", i, i%100),
			Rcpt: fmt.Sprintf("rcpt%d@dest.test", i%500)}
	}
	ctx := context.Background()
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		ev := evs[i%n]
		i++
		rc := ev.Rcpt
		ev.Rcpt = ""
		if r.Check(ctx, ev) != nil {
			b.Fatal("refused at MAIL")
		}
		ev.Rcpt = rc
		if r.Check(ctx, ev) != nil {
			b.Fatal("refused at RCPT")
		}
	}
}

// BenchmarkLimitTake is GCRA alone.
func BenchmarkLimitTake(b *testing.B) {
	l := Limit{Interval: time.Microsecond, Burst: 100}
	now := time.Now().UnixNano()
	var tat int64
	for b.Loop() {
		now += 1000
		tat, _ = l.Take(tat, now)
	}
}
