package milter

import (
	"context"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadmeExamples loads the README's example and every config in
// examples/milter as the gateway does, and builds each milter stage.
func TestReadmeExamples(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "milter", New)
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
	examples, err := filepath.Glob("../../examples/milter/*.toml")
	if err != nil || len(examples) < 4 {
		t.Fatalf("examples/milter: %v %v", examples, err)
	}
	for _, p := range examples {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		readmetest.Load(t, p, b, "milter", New)
	}
}

func TestConfig(t *testing.T) {
	tests := []struct {
		config string
		err    string // "" for none
	}{
		{`{"address": "unix:/run/milter.sock"}`, ""},
		{`{"address": "local:/run/milter.sock"}`, ""},
		{`{"address": "inet:127.0.0.1:8891"}`, ""},
		{`{"address": "inet:8891@127.0.0.1"}`, ""},
		{`{"address": "inet6:[::1]:8891"}`, ""},
		{`{"address": "inet6:8891@[::1]"}`, ""},
		{`{"address": "inet:localhost:8891", "default_action": "skip", "connect_timeout": "1s",
		   "command_timeout": "2s", "content_timeout": "3s", "macros": {"{daemon_name}": "mx-in", "j": ""}}`, ""},
		{`{}`, `address: unexpected ""`},
		{`{"address": "unix:relative.sock"}`, "absolute socket path"},
		{`{"address": "tcp:127.0.0.1:8891"}`, `expect unix:/path, inet:host:port or inet6:[addr]:port`},
		{`{"address": "inet:127.0.0.1"}`, "address: unexpected"},
		{`{"address": "inet:127.0.0.1:0"}`, "expect 1 to 65535"},
		{`{"address": "inet::8891"}`, "host is missing"},
		{`{"address": "inet:127.0.0.1:8891", "default_action": "tmpfail"}`,
			`default_action: unexpected "tmpfail"; expect tempfail, accept, reject, quarantine or skip`},
		{`{"address": "inet:127.0.0.1:8891", "macros": {"a b": "x"}}`, "macros: unexpected macro"},
		{`{"address": "inet:127.0.0.1:8891", "adress": "x"}`, "adress"},
	}
	for _, tt := range tests {
		f, err := New(stages.Env{}, stages.JSONConfig([]byte(tt.config)))
		if err == nil {
			f.(*Milter).Close()
		}
		if (tt.err == "" && err != nil) || (tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err))) {
			t.Errorf("New(%s) = %v; want ~%q", tt.config, err, tt.err)
		}
	}
}

// TestPlugin runs the stage out of process, as the gateway does: config,
// verdict and edits cross the gRPC boundary intact.
func TestPlugin(t *testing.T) {
	f := startFake(t, &fakeMilter{eom: func(w io.Writer) {
		writeRaw(w, 'h', []byte("X-Milter\x00seen\n\tfolded\x00"))
		writeRaw(w, 'b', []byte("replaced\n"))
		writeRaw(w, 'q', []byte("held for review\x00"))
		writeRaw(w, 'c', nil)
	}})
	st, err := sdktest.Stage(t, New, `{"address": "`+f.addr+`", "default_action": "skip"}`)
	if err != nil {
		t.Fatal(err)
	}
	if info := st.Info(); info.Phases != stages.Data || !info.Edits || info.Kind != "milter" {
		t.Errorf("info %+v", info)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tx := testTx()
	v, err := st.Run(ctx, stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != stages.Quarantine || !strings.Contains(v.Reason, "held for review") {
		t.Errorf("verdict %+v", v)
	}
	if _, msg := applied(t, tx, v); !strings.HasSuffix(msg, "X-Milter: seen\r\n\tfolded\r\n\r\nreplaced\r\n") {
		t.Errorf("message after edits:\n%s", msg)
	}
	if _, err := sdktest.Stage(t, New, `{"address": "inet:127.0.0.1:8891", "default_action": "defer"}`); err == nil ||
		!strings.Contains(err.Error(), "default_action") {
		t.Errorf("bad default_action through the plugin host: %v", err)
	}
}
