package state

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

func TestCanonicalEntry(t *testing.T) {
	for _, tc := range []struct {
		in, owner, sender, err string
	}{
		{in: "Partner@Example.ORG.", owner: "Boss@Example.test", sender: "partner@example.org"},
		{in: "@Example.org", sender: "example.org"},
		{in: "*.Bücher.example", sender: "*.xn--bcher-kva.example"},
		{in: "example.org", sender: "example.org"},
		{in: "[192.0.2.1]", err: `list entry "[192.0.2.1]": domain is not a host name or address literal; expect an address, a domain, "@domain" or "*.domain"`},
		{in: "a b", err: `list entry "a b": domain is not a host name or address literal; expect an address, a domain, "@domain" or "*.domain"`},
		{in: "x@example.org", owner: "nobody", err: `list owner "nobody": address without local part or domain`},
	} {
		owner := tc.owner
		if owner == "" {
			owner = "boss@example.test"
		}
		got, err := CanonicalEntry(ListEntry{Owner: owner, Kind: Block, Sender: tc.in})
		if tc.err != "" {
			if err == nil || err.Error() != tc.err {
				t.Errorf("%q: error %v, want %s", tc.in, err, tc.err)
			}
			continue
		}
		if err != nil || got.Sender != tc.sender || got.Owner != "boss@example.test" {
			t.Errorf("%q: %+v, %v; want sender %q", tc.in, got, err, tc.sender)
		}
	}
	if _, err := CanonicalEntry(ListEntry{Owner: "a@example.test", Kind: "deny", Sender: "example.org"}); err == nil || err.Error() != `list kind: unexpected "deny"; expect allow or block` {
		t.Errorf("bad kind: %v", err)
	}
}

func TestMatchList(t *testing.T) {
	entries := []ListEntry{
		{Kind: Allow, Sender: "example.org"},
		{Kind: Block, Sender: "spammer@example.org"},
		{Kind: Allow, Sender: "*.example.net"},
		{Kind: Allow, Sender: "friend@other.example"},
	}
	for sender, want := range map[string]string{
		"someone@example.org":      "allow example.org",
		"Spammer@example.org":      "block spammer@example.org", // a block wins, whatever the case
		"x@mail.example.net":       "allow *.example.net",
		"x@example.net":            "none", // *.domain is the subdomains only
		"FRIEND@other.example":     "allow friend@other.example",
		"friend@sub.other.example": "none",
		"":                         "none", // the null sender
	} {
		got := "none"
		if e := MatchList(entries, sender); e != nil {
			got = string(e.Kind) + " " + e.Sender
		}
		if got != want {
			t.Errorf("%q: %s, want %s", sender, got, want)
		}
	}
}

func TestNodeStatus(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	live, stale := now.Add(-time.Second), now.Add(-time.Hour)
	show := func(nodes []Node) []string {
		var out []string
		for _, n := range nodes {
			out = append(out, fmt.Sprintf("%s stale=%v differs=%v", n.Name, n.Stale, n.ConfigDiffers))
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		nodes []Node
		want  []string
	}{
		{"all agree", []Node{{Name: "a", ConfigHash: "x", Heartbeat: live}, {Name: "b", ConfigHash: "x", Heartbeat: live}},
			[]string{"a stale=false differs=false", "b stale=false differs=false"}},
		{"one differs", []Node{{Name: "a", ConfigHash: "x", Heartbeat: live}, {Name: "b", ConfigHash: "y", Heartbeat: live}, {Name: "c", ConfigHash: "x", Heartbeat: live}},
			[]string{"a stale=false differs=false", "b stale=false differs=true", "c stale=false differs=false"}},
		{"stale nodes do not vote", []Node{{Name: "a", ConfigHash: "x", Heartbeat: live}, {Name: "b", ConfigHash: "y", Heartbeat: stale}, {Name: "c", ConfigHash: "y", Heartbeat: stale}},
			[]string{"a stale=false differs=false", "b stale=true differs=true", "c stale=true differs=true"}},
		{"even split", []Node{{Name: "a", ConfigHash: "x", Heartbeat: live}, {Name: "b", ConfigHash: "y", Heartbeat: live}},
			[]string{"a stale=false differs=true", "b stale=false differs=true"}},
		{"none live", []Node{{Name: "a", ConfigHash: "x", Heartbeat: stale}},
			[]string{"a stale=true differs=false"}},
	} {
		NodeStatus(tc.nodes, now, 30*time.Second)
		if got := show(tc.nodes); !slices.Equal(got, tc.want) {
			t.Errorf("%s:\n got %v\nwant %v", tc.name, got, tc.want)
		}
	}
}

// TestNameWatchLostAnswer: a heartbeat that failed as far as the process
// knows, but was committed (the answer was lost with the connection), is
// the process's own writing when the next heartbeat finds it, not a
// clash; a heartbeat of the same instance this process never wrote is.
func TestNameWatchLostAnswer(t *testing.T) {
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	w := &NameWatch{StaleAfter: 30 * time.Second}
	at := func(s int) Node {
		return Node{Name: "mx", Started: start, Heartbeat: start.Add(time.Duration(s) * time.Second)}
	}
	w.Beat(Node{}, at(0))
	w.Failed(at(5))
	if begun, _ := w.Beat(at(5), at(10)); begun {
		t.Fatal("a heartbeat whose answer was lost makes a clash")
	}
	if !w.Settled() {
		t.Fatal("not settled after a heartbeat found its own writing")
	}
	// An outage longer than a few heartbeats, whose first heartbeat was
	// committed with its answer lost: found when PostgreSQL is back, it
	// is still this process's own.
	w.Failed(at(15))
	for s := 20; s < 20+5*60; s += 5 {
		w.Failed(at(s)) // refused or failed: PostgreSQL away
	}
	if begun, _ := w.Beat(at(15), at(400)); begun {
		t.Fatal("a heartbeat committed at the start of a long outage makes a clash when it ends")
	}
	// A copy of this very process (a machine cloned running): the same
	// instance, heartbeats this one did not write. A clash, but neither
	// yields: there is no telling which is the older, and a digest sent
	// twice is better than none.
	if begun, _ := w.Beat(at(402), at(405)); !begun || w.Settled() || w.Yields() {
		t.Fatalf("a clone's heartbeat: begun %v, settled %v, yields %v; want a clash in which neither yields", begun, w.Settled(), w.Yields())
	}
}
