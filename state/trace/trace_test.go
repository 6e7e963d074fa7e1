package trace

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
)

func TestRecordFindPrint(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	day1 := time.Date(2024, 5, 1, 23, 59, 0, 0, time.UTC)
	day2 := day1.Add(2 * time.Minute)
	from := "a@sender.test"
	l.Record(Event{Time: day1, QueueID: "Q1", Event: "connect", Client: "127.0.0.1", From: &from})
	l.Record(Event{Time: day1, QueueID: "OTHER", Event: "connect"})
	l.Record(Event{Time: day2, QueueID: "Q1", MessageID: "<m1@test>", Event: "data", Action: "quarantine",
		Reply: "250 2.0.0 Ok: queued as Q1", Stages: []Stage{{Name: "spam", Kind: "spam", Phase: "data", Action: stages.Quarantine, Score: 12, DurationMS: 1.5}}})
	l.Record(Event{Time: day2, QueueID: "Q1", Event: "released", Related: "Q2"})
	l.Record(Event{Time: day2, QueueID: "Q2", MessageID: "<m1@test>", Event: "attempt", Action: "relayed", Rcpts: []string{"b@dest.test"}})
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	// A line cut short by a crash is skipped.
	f, _ := os.OpenFile(filepath.Join(dir, "2024-05-02.jsonl"), os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString(`{"time":"2024-05-02T00:01:00Z","queue_id":"Q1","ev`)
	f.Close()

	for _, id := range []string{"Q1", "m1@test", "<m1@test>"} {
		evs, err := Find(dir, id)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, e := range evs {
			got = append(got, e.QueueID+":"+e.Event)
		}
		if want := "Q1:connect,Q1:data,Q1:released,Q2:attempt"; strings.Join(got, ",") != want {
			t.Errorf("Find(%q) = %v, want %s", id, got, want)
		}
	}
	evs, _ := Find(dir, "Q1")
	var b strings.Builder
	if err := Print(&b, evs); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"Q1  connect   client=127.0.0.1 from=<a@sender.test>\n",
		"action=quarantine reply=\"250 2.0.0 Ok: queued as Q1\"\n",
		"      stage spam (spam) data: quarantine score=12 1.5ms\n",
		"Q2  attempt   to=<b@dest.test> message_id=<m1@test> action=relayed\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("printed trace lacks %q:\n%s", want, out)
		}
	}
}

func TestExpire(t *testing.T) {
	dir := t.TempDir()
	l, _ := Open(dir, nil)
	now := time.Date(2024, 6, 10, 12, 0, 0, 0, time.UTC)
	l.Record(Event{Time: now.AddDate(0, 0, -31), QueueID: "OLD", Event: "connect"})
	l.Record(Event{Time: now.AddDate(0, 0, -29), QueueID: "KEPT", Event: "connect"})
	l.Record(Event{Time: now, QueueID: "NOW", Event: "connect"})
	if err := l.Expire(now, 30*24*time.Hour); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "*.jsonl"))
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	if strings.Join(names, ",") != "2024-05-12.jsonl,2024-06-10.jsonl" {
		t.Fatalf("files after Expire: %v", names)
	}
	// The current file was not in the way; writing goes on.
	l.Record(Event{Time: now, QueueID: "NOW", Event: "data"})
	if evs, _ := Find(dir, "NOW"); len(evs) != 2 {
		t.Fatalf("events after Expire: %v", evs)
	}
}

// TestMerge: an event read from the node's files and from the cluster's
// store (its time cut to the microsecond) is shown once; the others all,
// oldest first.
func TestMerge(t *testing.T) {
	at := time.Date(2026, 12, 6, 12, 0, 0, 123456789, time.UTC)
	own := []Event{{Time: at, QueueID: "Q1", Event: "connect"}, {Time: at.Add(time.Second), QueueID: "Q1", Event: "data"}}
	shared := []Event{{Time: at.Truncate(time.Microsecond), QueueID: "Q1", Event: "connect"}, {Time: at.Add(-time.Second), QueueID: "Q0", Event: "attempt"}}
	var got []string
	for _, e := range Merge(shared, own) {
		got = append(got, e.QueueID+":"+e.Event)
	}
	if want := "Q0:attempt,Q1:connect,Q1:data"; strings.Join(got, ",") != want {
		t.Fatalf("Merge = %v, want %s", got, want)
	}
}
