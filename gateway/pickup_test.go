package gateway_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/mailgate/mailgate/state/trace"
)

// pickupFile is the content of a pickup file: the envelope line, then msg.
func pickupFile(t testing.TB, from string, rcpts []string, msg string) string {
	t.Helper()
	line, err := stages.Pickup{From: from, Rcpts: rcpts}.Line()
	if err != nil {
		t.Fatal(err)
	}
	return string(line) + msg
}

// writePickup puts a file into <dataDir>/pickup/ as a writer must: written
// under a name starting with a dot, then renamed into place.
func writePickup(t testing.TB, dataDir, name, content string) {
	t.Helper()
	dir := filepath.Join(dataDir, "pickup")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, ".tmp-"+name)
	if err := os.WriteFile(tmp, []byte(content), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		t.Fatal(err)
	}
}

// dirNames lists the names in dir, which must exist.
func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// TestPickup: a file that appears in <data_dir>/pickup/ reaches the
// downstream server once, from the envelope's sender to its recipients,
// the message byte for byte, and is removed; a malformed file is moved
// to pickup/bad/ whole, with a log line, and the gateway goes on; a file
// whose name starts with a dot (being written) is left alone.
func TestPickup(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := tempDir(t)
	var log testkit.SyncBuffer
	g := startGatewayIn(t, dir, routeTo(down, "dest.test"), gateway.Options{Logger: slog.New(slog.NewTextHandler(&log, nil))})
	pickup := filepath.Join(dir, "pickup")
	partial := `{"from":"a@gateway.test","rc`
	if err := os.WriteFile(filepath.Join(pickup, ".partial"), []byte(partial), 0o640); err != nil {
		t.Fatal(err)
	}
	bad := "not an envelope\r\n" + message("bad@test", "x\r\n")
	writePickup(t, dir, "bad.eml", bad)
	msg := message("pickup@test", "a report\r\n.a line with a dot\r\n")
	writePickup(t, dir, "report.eml", pickupFile(t, "dmarc-reports@gateway.test", []string{"b@dest.test", "c@dest.test"}, msg))

	got := down.WaitFor(1, waitLong)[0]
	if got.From != "dmarc-reports@gateway.test" || strings.Join(got.Rcpts, " ") != "b@dest.test c@dest.test" {
		t.Errorf("envelope downstream: from %q to %v", got.From, got.Rcpts)
	}
	if string(got.Data) != msg {
		t.Errorf("message downstream:\n got %q\nwant %q", got.Data, msg)
	}
	waitQueueEmpty(t, g)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d messages downstream, want 1", n)
	}
	waitUntil(t, waitLong, "the malformed file to be moved to pickup/bad/", func() bool {
		return len(dirNames(t, filepath.Join(pickup, "bad"))) == 1
	})
	moved := dirNames(t, filepath.Join(pickup, "bad"))[0]
	if b, _ := os.ReadFile(filepath.Join(pickup, "bad", moved)); !strings.HasPrefix(moved, "bad.eml.") || string(b) != bad {
		t.Errorf("pickup/bad/%s holds %q, want bad.eml.<time> holding %q", moved, b, bad)
	}
	if !strings.Contains(log.String(), "pickup: malformed file moved aside") || !strings.Contains(log.String(), "bad/"+moved) {
		t.Errorf("no log line for the malformed file:\n%s", log.String())
	}
	queuedLine := regexp.MustCompile(`msg="pickup queued" queue_id=(\w+) file=report.eml`).FindStringSubmatch(log.String())
	if queuedLine == nil {
		t.Fatalf("no log line for the queued file:\n%s", log.String())
	}
	// The trace tells where the message came from.
	events, err := trace.Find(filepath.Join(dir, "trace"), queuedLine[1])
	if err != nil || len(events) == 0 || events[0].Event != "pickup" || events[0].Reason != "pickup file report.eml" {
		t.Errorf("trace of %s: %+v, %v; want a pickup event first", queuedLine[1], events, err)
	}
	if names := dirNames(t, pickup); strings.Join(names, " ") != ".partial .queued bad" {
		t.Errorf("pickup/ holds %v, want the dot file and the two directories", names)
	}
	if names := dirNames(t, filepath.Join(pickup, ".queued")); len(names) != 0 {
		t.Errorf("pickup/.queued/ holds %v", names)
	}
}

// TestPickupAfterCrash starts a gateway on each state a kill -9 can leave
// a pickup file in, built on disk as the crash leaves it, and checks that
// each message reaches the downstream server exactly once:
//   - before: the file still in pickup/, a spool message file begun;
//   - renamed: the file in pickup/.queued/<queue ID>, not committed;
//   - committed: the file in .queued/ and its message committed;
//   - removed: the message committed, the file gone, the router not told.
func TestPickupAfterCrash(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := tempDir(t)
	queued := filepath.Join(dir, "pickup", ".queued")
	if err := os.MkdirAll(queued, 0o750); err != nil {
		t.Fatal(err)
	}
	sp, err := spool.Open(filepath.Join(dir, "queue"))
	if err != nil {
		t.Fatal(err)
	}
	file := func(id string) string {
		return pickupFile(t, "dmarc-reports@gateway.test", []string{"b@dest.test"}, message(id, "report\r\n"))
	}
	// begin starts the spool message of a take; commit finishes it.
	begin := func(id string) *spool.Writer {
		w, err := sp.Create()
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(message(id, "report\r\n"))); err != nil {
			t.Fatal(err)
		}
		return w
	}
	commit := func(w *spool.Writer) {
		if err := w.Commit(context.Background(), spool.NewEnvelope("dmarc-reports@gateway.test", []string{"b@dest.test"}, "", "", "")); err != nil {
			t.Fatal(err)
		}
	}
	begin("before@test").Flush()
	writePickup(t, dir, "before.eml", file("before@test"))
	w := begin("renamed@test")
	w.Flush()
	os.WriteFile(filepath.Join(queued, w.ID()), []byte(file("renamed@test")), 0o640)
	w = begin("committed@test")
	commit(w)
	os.WriteFile(filepath.Join(queued, w.ID()), []byte(file("committed@test")), 0o640)
	commit(begin("removed@test"))
	if err := sp.Close(); err != nil {
		t.Fatal(err)
	}

	g := startGatewayIn(t, dir, routeTo(down, "dest.test"), gateway.Options{Logger: testLogger(t)})
	down.WaitFor(4, waitLong)
	waitQueueEmpty(t, g)
	got := map[string]int{}
	for _, m := range down.Messages() {
		got[messageID(m.Data)]++
	}
	for _, id := range []string{"before@test", "renamed@test", "committed@test", "removed@test"} {
		if got[id] != 1 {
			t.Errorf("%s delivered %d times, want once (all: %v)", id, got[id], got)
		}
	}
	if n := len(down.Messages()); n != 4 {
		t.Errorf("%d messages downstream, want 4: %v", n, got)
	}
	if names := dirNames(t, queued); len(names) != 0 {
		t.Errorf("pickup/.queued/ holds %v", names)
	}
}

// TestPickupKill9 kills `mailgate serve` with SIGKILL while it takes a
// batch of pickup files, restarts it on the same data dir, three times,
// and checks that every file's message reaches the downstream server
// exactly once. The server defers every delivery until the last start,
// so that a repeated delivery could only come from a file queued twice,
// not from a delivery cut short by the kill.
func TestPickupKill9(t *testing.T) {
	const rounds, batch = 3, 100
	down := smtptest.NewServer(t)
	down.SetRcptReply("b@dest.test", 451)
	data := tempDir(t)
	conf := writeConfig(t, data, down)
	p := startProcess(t, conf)
	pickup := filepath.Join(data, "pickup")
	for round := range rounds {
		for i := range batch {
			id := fmt.Sprintf("r%d-%d@pickup.test", round, i)
			writePickup(t, data, id+".eml", pickupFile(t, "dmarc-reports@gateway.test", []string{"b@dest.test"}, message(id, "report\r\n")))
		}
		// Kill while the gateway is at the batch.
		waitUntil(t, waitLong, "the gateway to take pickup files", func() bool {
			// the batch, .queued and bad; later rounds further in
			return len(dirNames(t, pickup)) < batch+2-round*40
		})
		p.kill9(t)
		t.Logf("kill %d: %d files left in pickup/, %d in pickup/.queued/", round+1,
			len(dirNames(t, pickup))-2, len(dirNames(t, filepath.Join(pickup, ".queued"))))
		p = startProcess(t, conf)
	}
	down.SetRcptReply("b@dest.test", 0)
	var got map[string]int
	waitUntil(t, 60*time.Second, "every pickup file's message downstream", func() bool {
		got = map[string]int{}
		for _, m := range down.Messages() {
			got[messageID(m.Data)]++
		}
		return len(got) == rounds*batch
	})
	// Only an empty queue proves no second copy is still to come.
	waitUntil(t, waitLong, "the queue to be empty", func() bool {
		// A message's file goes when it is removed from the queue.
		ids, err := spool.ReadIDs(filepath.Join(data, "queue", "msg"), "")
		if err != nil {
			t.Fatal(err)
		}
		return len(ids) == 0
	})
	for _, m := range down.Messages() {
		if id := messageID(m.Data); got[id] != 1 {
			t.Errorf("%s delivered %d times", id, got[id])
		}
	}
	if n := len(down.Messages()); n != rounds*batch {
		t.Errorf("%d deliveries downstream for %d pickup files", n, rounds*batch)
	}
}
