package failfast

import (
	"errors"
	"testing"
	"time"
)

var errAway = errors.New("engine away")

// TestGate: an engine found away refuses operations at once, wrapped in
// Down, until Retry has passed; then one operation at a time tries it,
// and the first answer ends the outage. An operation that says neither
// (its caller cancelled it) changes nothing but lets the next one try.
func TestGate(t *testing.T) {
	g := New(Config{Down: errAway, Retry: time.Hour})
	if probe, err := g.Admit(); err != nil || probe != 0 || !g.UpSince().IsZero() {
		t.Fatalf("an engine not tried yet: Admit %v %v, UpSince %v; want admitted, not a probe, no answer yet", probe, err, g.UpSince())
	}
	g.Settle(0, nil, true, false)
	if g.UpSince().IsZero() {
		t.Fatal("no UpSince after an answer")
	}
	refused := errors.New("connection refused")
	if g.Settle(0, refused, false, true) {
		t.Error("the first failure says the engine was known away")
	}
	if _, err := g.Admit(); !errors.Is(err, errAway) || g.Err() != refused || g.DownSince().IsZero() || !g.UpSince().IsZero() {
		t.Fatalf("within Retry: Admit %v, Err %v, DownSince %v", err, g.Err(), g.DownSince())
	}

	g = New(Config{Down: errAway, Retry: 0})
	g.Settle(0, refused, false, true)
	probe, err := g.Admit()
	if err != nil || probe == 0 {
		t.Fatalf("after Retry: Admit %v %v; want one probe admitted", probe, err)
	}
	if _, err := g.Admit(); !errors.Is(err, errAway) {
		t.Fatalf("a second probe while one is trying: %v; want refused", err)
	}
	g.Settle(probe, nil, false, false) // cancelled: tells nothing
	if g.Err() == nil {
		t.Fatal("a cancelled probe ended the outage")
	}
	if probe, err = g.Admit(); err != nil || probe == 0 {
		t.Fatalf("after a cancelled probe: %v %v; want the next admitted as the probe", probe, err)
	}
	if !g.Settle(probe, refused, false, true) {
		t.Error("a failed probe does not say the engine was known away")
	}
	probe, _ = g.Admit()
	g.Settle(probe, nil, true, false)
	if _, err := g.Admit(); g.Err() != nil || !g.DownSince().IsZero() || err != nil {
		t.Errorf("after an answer: Err %v, DownSince %v, Admit %v", g.Err(), g.DownSince(), err)
	}
}

// TestGateProbeAlone: operations admitted while the engine answered and
// ending during the outage (they fail too, or their callers cancel them)
// do not let a second probe run beside the one under way; only the
// probe's own end does.
func TestGateProbeAlone(t *testing.T) {
	g := New(Config{Down: errAway, Retry: 0})
	var before []uint64
	for range 3 { // in flight when the engine goes away
		probe, err := g.Admit()
		if err != nil {
			t.Fatal(err)
		}
		before = append(before, probe)
	}
	refused := errors.New("connection refused")
	g.Settle(before[0], refused, false, true)
	probe, err := g.Admit()
	if err != nil || probe == 0 {
		t.Fatalf("after Retry: Admit %v %v; want the probe", probe, err)
	}
	g.Settle(before[1], refused, false, true)
	g.Settle(before[2], nil, false, false)
	if _, err := g.Admit(); !errors.Is(err, errAway) {
		t.Fatalf("older operations ended while the probe runs: Admit %v; want refused", err)
	}
	g.Settle(probe, refused, false, true)
	if probe, err := g.Admit(); err != nil || probe == 0 {
		t.Fatalf("after the probe failed: Admit %v %v; want the next probe", probe, err)
	}

	// A probe of an earlier outage that ends during the next one does
	// not end that one's probe.
	g = New(Config{Down: errAway, Retry: 0})
	g.Settle(0, refused, false, true)
	old, _ := g.Admit()               // a slow probe of outage 1
	g.Settle(0, nil, true, false)     // another operation's answer ends outage 1
	g.Settle(0, refused, false, true) // outage 2
	cur, err := g.Admit()
	if err != nil || cur == 0 || cur == old {
		t.Fatalf("outage 2: Admit %v %v; want a new probe", cur, err)
	}
	g.Settle(old, refused, false, true)
	if _, err := g.Admit(); !errors.Is(err, errAway) {
		t.Fatalf("outage 1's probe ended while outage 2's runs: Admit %v; want refused", err)
	}
}
