package host

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
)

// TestTransports: a plugin that serves the data path gets its calls there;
// one built before it (TESTPLUGIN_GRPC_ONLY hides the socket from it) over
// gRPC; both give the same answers for every kind of body, the filter's
// errors, and a filter context that ends when the call's deadline passes
// or its caller gives up.
func TestTransports(t *testing.T) {
	header := []byte("Subject: hello\r\n\r\n")
	big := []byte(strings.Repeat("a line of a large message\r\n", 5000))
	path := filepath.Join(t.TempDir(), "msg")
	if err := os.WriteFile(path, append(header, big...), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		grpcOnly bool
	}{{"data path", false}, {"gRPC only", true}} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.grpcOnly {
				t.Setenv("TESTPLUGIN_GRPC_ONLY", "1")
			}
			logs := &logBuffer{}
			p := startTest(t, Spec{Config: []byte(`{"action": "tag", "score": 1.5, "add_header": "X-Test: yes"}`),
				Logger: slog.New(slog.NewJSONHandler(logs, nil))})
			if got := p.current().data != nil; got == tc.grpcOnly {
				t.Fatalf("data path in use: %v", got)
			}
			small := []byte("short\r\n")
			for _, bc := range []struct {
				name string
				body stages.Body
				want []byte
			}{
				{"inline", stages.BytesBody(small), small},
				{"file", fileBody{path, int64(len(header)), int64(len(big))}, big},
				{"streamed", stages.BytesBody(big), big},
				{"empty", stages.BytesBody(nil), nil},
			} {
				v, err := run(p, waitLong, dataTx("a@example.org", bc.body))
				if err != nil {
					t.Errorf("%s: %v", bc.name, err)
					continue
				}
				if v.Result != digest(bc.want) || v.Action != stages.Tag || v.Score != 1.5 || len(v.Edits) != 1 {
					t.Errorf("%s: verdict %+v, want result %q", bc.name, v, digest(bc.want))
				}
			}
			if _, err := run(p, waitLong, dataTx("fail@example.org", nil)); err == nil || !strings.Contains(err.Error(), "plugin: scanner unreachable") {
				t.Errorf("failing filter: %v", err)
			}

			// The deadline reaches the filter's context. Which of the two
			// ends it first, the plugin's timer or the host's cancel at
			// its deadline, is a race: the error may be either.
			ended := func() int { return strings.Count(logs.String(), `"msg":"testplugin context ended"`) }
			_, err := run(p, 300*time.Millisecond, dataTx("wait@example.org", nil))
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("call past its deadline: %v", err)
			}
			waitFor(t, waitLong, "the filter's context to end at the deadline:\n"+logs.String(), func() bool { return ended() == 1 })

			// So does the caller's giving up.
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() {
				_, err := p.Run(ctx, stages.Data, dataTx("wait@example.org", nil))
				done <- err
			}()
			waitFor(t, waitLong, "the call to reach the plugin", func() bool {
				return strings.Count(logs.String(), `"msg":"testplugin waiting"`) == 2
			})
			cancel()
			if err := <-done; !errors.Is(err, context.Canceled) {
				t.Errorf("cancelled call: %v", err)
			}
			waitFor(t, waitLong, "the filter's context to end when the caller gave up:\n"+logs.String(), func() bool {
				return strings.Contains(logs.String(), `"msg":"testplugin context ended","stage":"test","err":"context canceled"`) && ended() == 2
			})
			if _, err := run(p, waitLong, dataTx("a@example.org", nil)); err != nil {
				t.Errorf("call after a cancel: %v", err)
			}
		})
	}
}
