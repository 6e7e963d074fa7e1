package spam

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/testkit"
)

// spamdRequest is what the fake spamd received.
type spamdRequest struct {
	command string            // "SYMBOLS SPAMC/1.5"
	headers map[string]string // by lower-case name
	message string
}

// fakeSpamd serves SPAMC requests on 127.0.0.1 with reply, or never
// answers when reply is "". It records each request in got.
func fakeSpamd(t *testing.T, reply string) (addr string, got chan spamdRequest) {
	t.Helper()
	return fakeSpamdOn(t, "tcp", "127.0.0.1:0", reply)
}

func fakeSpamdOn(t *testing.T, network, address, reply string) (addr string, got chan spamdRequest) {
	t.Helper()
	l, err := net.Listen(network, address)
	if err != nil {
		t.Fatal(err)
	}
	got = make(chan spamdRequest, 10)
	done := make(chan struct{})
	t.Cleanup(func() {
		l.Close()
		close(done)
	})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(conn)
				cmd, _ := br.ReadString('\n')
				req := spamdRequest{command: strings.TrimSpace(cmd), headers: map[string]string{}}
				for {
					line, err := br.ReadString('\n')
					line = strings.TrimRight(line, "\r\n")
					if err != nil || line == "" {
						break
					}
					k, v, _ := strings.Cut(line, ":")
					req.headers[strings.ToLower(k)] = strings.TrimSpace(v)
				}
				n, _ := strconv.Atoi(req.headers["content-length"])
				msg := make([]byte, n)
				io.ReadFull(br, msg)
				req.message = string(msg)
				got <- req
				if reply == "" {
					<-done // hang until the test ends
					return
				}
				io.WriteString(conn, reply)
			}()
		}
	}()
	return l.Addr().String(), got
}

func wholeMessage(t *testing.T, tx *stages.Transaction) string {
	t.Helper()
	r, err := tx.Message()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestSpamd(t *testing.T) {
	const reply = "SPAMD/1.1 0 EX_OK\r\nContent-length: 22\r\nSpam: True ; 15.0 / 5.0\r\n\r\nBAYES_99,URIBL_BLACK\r\n"
	addr, got := fakeSpamd(t, reply)
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "spamd", "address": %q, "backend_weight": 0.5, "default_rules": false,
		"rule": [{"name": "LOCAL", "score": 1, "body": "hello"}]}`, addr))
	tx := parse(t, clean+"hello\n")
	v := run(t, s, tx)
	if v.Score != 8.5 || v.Result != "spam" || v.Reason != "LOCAL=1,spamd=7.5[BAYES_99 URIBL_BLACK]" {
		t.Errorf("verdict %+v; want 8.5 = LOCAL 1 + spamd 15 × 0.5", v)
	}
	req := <-got
	want := wholeMessage(t, tx)
	if req.command != "SYMBOLS SPAMC/1.5" || req.headers["content-length"] != strconv.Itoa(len(want)) || req.message != want {
		t.Errorf("spamd got %q %v and %d bytes; want SYMBOLS SPAMC/1.5 and the %d bytes of the message", req.command, req.headers, len(req.message), len(want))
	}
}

func TestSpamdUnixSocket(t *testing.T) {
	path := filepath.Join(t.TempDir(), "spamd.sock")
	fakeSpamdOn(t, "unix", path, "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.2 / 5.0\r\n\r\n")
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "spamd", "address": "unix:%s"}`, path))
	if v := run(t, s, parse(t, clean)); v.Score != 1.2 || v.Result != "ham" || v.Reason != "spamd=1.2" {
		t.Errorf("verdict %+v", v)
	}
}

func TestSpamdFailures(t *testing.T) {
	refused := func(t *testing.T) string {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a := l.Addr().String()
		l.Close()
		return a
	}
	tests := []struct {
		name  string
		addr  func(t *testing.T) string
		extra string
		want  string
	}{
		{"down", refused, "", "spamd: dial tcp"},
		{"refuses", func(t *testing.T) string {
			a, _ := fakeSpamd(t, "SPAMD/1.0 76 Bad header line: Content-length\r\n")
			return a
		}, "", "spamd: error 76 Bad header line"},
		{"no verdict", func(t *testing.T) string {
			a, _ := fakeSpamd(t, "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n")
			return a
		}, "", "reply without a Spam header"},
		{"garbage", func(t *testing.T) string {
			a, _ := fakeSpamd(t, "HTTP/1.1 400 Bad Request\r\n\r\n")
			return a
		}, "", `unexpected reply "HTTP/1.1 400 Bad Request"`},
		{"hangs", func(t *testing.T) string {
			a, _ := fakeSpamd(t, "")
			return a
		}, `, "timeout": "200ms"`, "context deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "spamd", "address": %q%s}`, tt.addr(t), tt.extra))
			tx := parse(t, clean)
			done := make(chan error, 1)
			go func() {
				_, err := s.Run(context.Background(), stages.Data, tx)
				done <- err
			}()
			// The hanging spamd never answers: only the stage's timeout
			// ends the call. The bound is for a loaded machine.
			select {
			case err := <-done:
				if err == nil || !strings.Contains(err.Error(), tt.want) {
					t.Errorf("error %v; want one containing %q", err, tt.want)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("Run still waiting after 30s")
			}
		})
	}
}

func TestBackendMaxSize(t *testing.T) {
	addr, got := fakeSpamd(t, "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 0.0 / 5.0\r\n\r\n")
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "spamd", "address": %q, "backend_max_size": "100B"}`, addr))
	v := run(t, s, parse(t, clean))
	if v.Score != 0 || !strings.Contains(v.Reason, "spamd not asked: message of") {
		t.Errorf("verdict %+v; want spamd not asked", v)
	}
	if len(got) != 0 {
		t.Error("spamd was asked about a message over backend_max_size")
	}
}

// rspamdReplyJSON is shaped like a real /checkv2 reply of rspamd 3.x.
const rspamdReplyJSON = `{
  "is_skipped": false,
  "score": 12.3,
  "required_score": 15.0,
  "action": "add header",
  "thresholds": {"reject": 15.0, "add header": 6.0, "greylist": 4.0},
  "symbols": {
    "BAYES_SPAM": {"name": "BAYES_SPAM", "score": 5.1, "metric_score": 5.1, "description": "Message probably spam", "options": ["99.99%"]},
    "RBL_SPAMHAUS_XBL": {"name": "RBL_SPAMHAUS_XBL", "score": 4.0, "metric_score": 4.0, "options": ["2.0.0.127.zen.spamhaus.org : 127.0.0.4"]},
    "MIME_GOOD": {"name": "MIME_GOOD", "score": -0.1, "metric_score": -0.1, "description": "Known content-type", "options": ["text/plain"]}
  },
  "messages": {},
  "message-id": "20250121210442.1@example.test",
  "time_real": 0.041,
  "milter": {"add_headers": {"X-Spamd-Result": {"value": "default: False [12.30 / 15.00]", "order": 0}}}
}`

func TestRspamd(t *testing.T) {
	type request struct {
		path   string
		header http.Header
		body   string
	}
	got := make(chan request, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- request{r.Method + " " + r.URL.Path, r.Header, string(b)}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, rspamdReplyJSON)
	}))
	defer srv.Close()
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "rspamd", "address": %q}`, srv.URL))
	tx := parse(t, clean)
	tx.Client = stages.Client{Helo: "mail.example.test", Name: "mail.example.test"}
	tx.Client.Addr = netip.MustParseAddr("192.0.2.25")
	tx.Rcpts = []string{"b@example.test", "c@example.test"}
	v := run(t, s, tx)
	if v.Score != 12.3 || v.Result != "spam" || v.Reason != "rspamd=12.3[BAYES_SPAM MIME_GOOD RBL_SPAMHAUS_XBL]" {
		t.Errorf("verdict %+v", v)
	}
	req := <-got
	h := req.header
	if req.path != "POST /checkv2" || h.Get("IP") != "192.0.2.25" || h.Get("Helo") != "mail.example.test" ||
		h.Get("From") != "a@example.test" || strings.Join(h.Values("Rcpt"), ",") != "b@example.test,c@example.test" ||
		h.Get("Queue-Id") != "Q1" || req.body != wholeMessage(t, tx) {
		t.Errorf("rspamd got %s %v and %d bytes", req.path, h, len(req.body))
	}
}

func TestRspamdFailures(t *testing.T) {
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    string
	}{
		{"server error", func(w http.ResponseWriter, r *http.Request) { http.Error(w, "oops", 500) }, "rspamd: HTTP 500"},
		{"not JSON", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "<html>") }, "rspamd: reply:"},
		{"no score", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, `{"symbols": {}}`) }, "without a score"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srv := httptest.NewServer(tt.handler)
			defer srv.Close()
			s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "rspamd", "address": %q}`, strings.TrimPrefix(srv.URL, "http://")))
			_, err := s.Run(context.Background(), stages.Data, parse(t, clean))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %v; want one containing %q", err, tt.want)
			}
		})
	}

	// A skipped message is no error.
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"is_skipped": true, "score": 0, "required_score": 15, "action": "no action", "symbols": {}}`)
	}))
	defer srv.Close()
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "rspamd", "address": %q}`, srv.URL))
	if v := run(t, s, parse(t, clean)); !strings.Contains(v.Reason, "rspamd not asked: rspamd skipped the message") {
		t.Errorf("verdict %+v", v)
	}
}

// TestRealSpamd checks the client against SpamAssassin's spamd when it is
// installed. It is optional: the fake server above covers the protocol.
func TestRealSpamd(t *testing.T) {
	bin := testkit.Need(t, "spamd", "spamd")
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	dir := t.TempDir()
	spamdCtx, stop := context.WithCancel(context.Background())
	cmd := exec.CommandContext(spamdCtx, bin, "--local", "--listen=127.0.0.1:"+port, "--max-children=1",
		"--pidfile="+filepath.Join(dir, "spamd.pid"), "--nouser-config", "--syslog=stderr")
	cmd.Stderr = io.Discard
	// SIGTERM lets spamd stop its children too.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stop()
		cmd.Wait()
	})
	// spamd compiles its rules before it listens: wait, bounded.
	deadline := time.Now().Add(60 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spamd did not listen on %s within 60s", addr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s := newSpam(t, stages.Env{}, fmt.Sprintf(`{"backend": "spamd", "address": %q, "timeout": "3m", "default_rules": false}`, addr))
	// spamd's first scan loads what --local left lazy; on a loaded machine
	// that takes far longer than run's 10 s, so this call has its own bound.
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	v, err := s.Run(ctx, stages.Data, parse(t, "Subject: test\nFrom: a@example.test\n\n"+gtube+"\n"))
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	t.Logf("verdict %+v", v)
	if v.Score < 1990 || v.Result != "gtube" || !strings.Contains(v.Reason, "GTUBE") {
		t.Errorf("verdict %+v; want our GTUBE and spamd's", v)
	}
}
