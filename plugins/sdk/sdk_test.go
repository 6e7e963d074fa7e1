package sdk

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"testing"
	"time"
)

// TestLogFormat checks the lines go-plugin parses on the gateway's side:
// hclog's keys, level names and timestamp layout.
func TestLogFormat(t *testing.T) {
	var buf bytes.Buffer
	log := newLogger(&buf)
	log.Log(t.Context(), slog.LevelDebug-4, "tracing")
	log.Warn("scanner slow", "ms", 1200)
	var want = []struct{ level, msg string }{{"trace", "tracing"}, {"warn", "scanner slow"}}
	lines := bytes.Split(bytes.TrimSpace(buf.Bytes()), []byte("\n"))
	if len(lines) != len(want) {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	for i, line := range lines {
		var e map[string]any
		if err := json.Unmarshal(line, &e); err != nil {
			t.Fatal(err)
		}
		if e["@level"] != want[i].level || e["@message"] != want[i].msg {
			t.Errorf("line %s, want level %s message %q", line, want[i].level, want[i].msg)
		}
		ts, _ := e["@timestamp"].(string)
		if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", ts); err != nil {
			t.Errorf("timestamp: %v", err)
		}
	}
	if !bytes.Contains(lines[1], []byte(`"ms":1200`)) {
		t.Errorf("attribute lost: %s", lines[1])
	}
}
