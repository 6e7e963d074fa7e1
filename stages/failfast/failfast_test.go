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
	if err := g.Admit(); err != nil || !g.UpSince().IsZero() {
		t.Fatalf("an engine not tried yet: Admit %v, UpSince %v; want admitted, no answer yet", err, g.UpSince())
	}
	g.Settle(nil, true, false)
	if g.UpSince().IsZero() {
		t.Fatal("no UpSince after an answer")
	}
	refused := errors.New("connection refused")
	if g.Settle(refused, false, true) {
		t.Error("the first failure says the engine was known away")
	}
	if err := g.Admit(); !errors.Is(err, errAway) || g.Err() != refused || g.DownSince().IsZero() || !g.UpSince().IsZero() {
		t.Fatalf("within Retry: Admit %v, Err %v, DownSince %v", err, g.Err(), g.DownSince())
	}

	g = New(Config{Down: errAway, Retry: 0})
	g.Settle(refused, false, true)
	if err := g.Admit(); err != nil {
		t.Fatalf("after Retry: %v; want one probe admitted", err)
	}
	if err := g.Admit(); !errors.Is(err, errAway) {
		t.Fatalf("a second probe while one is trying: %v; want refused", err)
	}
	g.Settle(nil, false, false) // cancelled: tells nothing
	if g.Err() == nil {
		t.Fatal("a cancelled probe ended the outage")
	}
	if err := g.Admit(); err != nil {
		t.Fatalf("after a cancelled probe: %v; want the next admitted", err)
	}
	if !g.Settle(refused, false, true) {
		t.Error("a failed probe does not say the engine was known away")
	}
	g.Admit()
	g.Settle(nil, true, false)
	if g.Err() != nil || !g.DownSince().IsZero() || g.Admit() != nil {
		t.Errorf("after an answer: Err %v, DownSince %v", g.Err(), g.DownSince())
	}
}
