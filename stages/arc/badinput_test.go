package arc

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// countingLookup finds no key and counts the lookups asked of it.
func countingLookup(n *atomic.Int64) dkimcore.TXTLookup {
	return func(ctx context.Context, name string) ([]string, error) {
		n.Add(1)
		return nil, nil
	}
}

// xBodyHash is the body hash of the body "x\r\n" the tests use.
var xBodyHash = func() string {
	sum := sha256.Sum256([]byte("x\r\n"))
	return base64.StdEncoding.EncodeToString(sum[:])
}()

// arcSet is a syntactically good ARC Set of instance i, with signatures
// that cannot verify.
func arcSet(i int) stages.Header {
	return stages.Header{
		{Name: fieldAS, Value: fmt.Sprintf("a=rsa-sha256; b=AAAA; cv=%s; d=example.org; i=%d; s=s", map[bool]string{true: "none", false: "pass"}[i == 1], i)},
		{Name: fieldAMS, Value: fmt.Sprintf("a=rsa-sha256; b=AAAA; bh=%s; c=relaxed/relaxed; d=example.org; h=from; i=%d; s=s", xBodyHash, i)},
		{Name: fieldAAR, Value: fmt.Sprintf("i=%d; mx.example.org; spf=pass", i)},
	}
}

// TestBadChains: malformed chains, huge instance numbers and floods of
// ARC fields give a result, fail with a reason, and cost no DNS lookup
// when the structure alone decides.
func TestBadChains(t *testing.T) {
	base := stages.Header{{Name: "From", Value: "a@example.com"}}
	many := func(n int, f stages.Field) stages.Header {
		h := append(stages.Header{}, base...)
		for range n {
			h = append(h, f)
		}
		return h
	}
	var fifty stages.Header
	for i := 50; i >= 1; i-- {
		fifty = append(fifty, arcSet(i)...)
	}
	cases := []struct {
		name    string
		h       stages.Header
		problem string
		lookups bool // the structure is right; the keys decide
	}{
		{"1000 ARC-Seal", many(1000, arcSet(1)[0]), "more than 150 ARC header fields", false},
		{"1000 AMS", many(1000, arcSet(1)[1]), "more than 150 ARC header fields", false},
		{"huge instance", append(arcSet(1), stages.Field{Name: fieldAS, Value: "a=rsa-sha256; b=AAAA; cv=pass; d=example.org; i=99999999999999999999999; s=s"}), "expect an instance from 1 to 50", false},
		{"instance 51", append(arcSet(1), arcSet(51)[0]), "i=51; expect an instance", false},
		{"instance 0", arcSet(0), "i=0", false},
		{"gap", append(arcSet(3), arcSet(1)...), "with i=2", false},
		{"duplicate set", append(arcSet(1), arcSet(1)...), "two ARC-Seal fields with i=1", false},
		{"cv pass at 1", append(arcSet(2)[:0:0], stages.Field{Name: fieldAS, Value: "a=rsa-sha256; b=AAAA; cv=pass; d=example.org; i=1; s=s"}, arcSet(1)[1], arcSet(1)[2]), `cv="pass"`, false},
		{"unparseable seal", stages.Header{{Name: fieldAS, Value: "a=rsa-sha256; b"}}, "ARC-Seal: tag", false},
		{"seal with nul", stages.Header{{Name: fieldAS, Value: "a=rsa\x00; i=1"}}, "invalid character", false},
		{"AAR without instance", stages.Header{{Name: fieldAAR, Value: "mx.example.org; none"}}, "does not start with i=", false},
		{"fifty sets", fifty, "no key record", true},
		{"lower case names", stages.Header{{Name: "arc-seal", Value: arcSet(1)[0].Value}, {Name: "ARC-MESSAGE-SIGNATURE", Value: arcSet(1)[1].Value}, {Name: "arc-authentication-results", Value: arcSet(1)[2].Value}}, "no key record", true},
	}
	for _, c := range cases {
		var n atomic.Int64
		v := verifier{lookup: countingLookup(&n)}
		out := v.check(context.Background(), c.h, stages.BytesBody("x\r\n"))
		if out.CV != Fail || !strings.Contains(out.Problem, c.problem) {
			t.Errorf("%s: %s (%s); want fail with %q", c.name, out.CV, out.Problem, c.problem)
		}
		if got := n.Load(); (got > 0) != c.lookups || got > 1 {
			t.Errorf("%s: %d key lookups", c.name, got)
		}
	}
}

// TestNoChain: a message without ARC fields is none, with nothing looked
// up, and a canceled context still gives a result.
func TestNoChain(t *testing.T) {
	var n atomic.Int64
	v := verifier{lookup: countingLookup(&n)}
	if out := v.check(context.Background(), stages.Header{{Name: "From", Value: "a@example.com"}}, nil); out.CV != None || n.Load() != 0 {
		t.Errorf("no ARC fields: %+v, %d lookups", out, n.Load())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v = verifier{lookup: func(ctx context.Context, name string) ([]string, error) { return nil, ctx.Err() }}
	if out := v.check(ctx, arcSet(1), stages.BytesBody("x\r\n")); out.CV != Fail {
		t.Errorf("canceled: %+v", out)
	}
	if !errors.Is(ctx.Err(), context.Canceled) {
		t.Fatal("context")
	}
}

// FuzzCheck feeds arbitrary ARC fields to the parser and the chain checks:
// whatever they hold, a result comes back, and never more than one key
// lookup per distinct selector and domain of at most 50 sets.
func FuzzCheck(f *testing.F) {
	for _, h := range []stages.Header{arcSet(1), append(arcSet(2), arcSet(1)...)} {
		f.Add(h[0].Value, h[1].Value, h[2].Value)
	}
	f.Add("i=1; a=rsa-sha256;;", "h=from::to; i=01", "i = 1 ; x")
	f.Add("i=50; cv=none", "i=1; l=99999999999999999999", "i=1;")
	f.Fuzz(func(t *testing.T, as, ams, aar string) {
		var n atomic.Int64
		v := verifier{lookup: countingLookup(&n)}
		h := stages.Header{{Name: fieldAS, Value: as}, {Name: fieldAMS, Value: ams}, {Name: fieldAAR, Value: aar}, {Name: "From", Value: "a@example.com"}}
		out := v.check(context.Background(), h, stages.BytesBody("body\r\n"))
		if out.CV != Fail && out.CV != Pass {
			t.Fatalf("cv %q for a message with ARC fields", out.CV)
		}
		if n.Load() > 2 {
			t.Fatalf("%d lookups for one set", n.Load())
		}
	})
}
