package gateway_test

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// groupStages are two built-in stages in one process group ([[stage]]
// process): spam and the headers stage, which needs spam's result, so
// their data-phase calls go in one batch.
const groupStages = `
[[stage]]
name = "spam"
kind = "spam"
process = "checks"

[[stage]]
name = "headers"
kind = "headers"
process = "checks"
[stage.config]
spam_headers = true
`

// groupPID is the pid /healthz shows for both stages of the group; 0 if
// they are not both up in one process.
func groupPID(t *testing.T, healthz string) int {
	t.Helper()
	_, body := httpGet(t, healthz)
	var pids []int
	for _, m := range regexp.MustCompile(`(?m)^stage (spam|headers): ok: up, pid (\d+)$`).FindAllStringSubmatch(body, -1) {
		pid, _ := strconv.Atoi(m[2])
		pids = append(pids, pid)
	}
	if len(pids) != 2 || pids[0] != pids[1] {
		return 0
	}
	return pids[0]
}

// TestProcessGroupKilledMidStream: the stages of a process group share one
// process; kill -9 of it while clients send mail fails the calls of both
// (each applies its on_error, 451 here), the restart brings both back in
// one new process, and every message that got a 250 was filtered by both
// and delivered once.
func TestProcessGroupKilledMidStream(t *testing.T) {
	const clients = 4
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+groupStages)
	healthz := "http://" + g.AdminAddr().String() + "/healthz"
	pid := groupPID(t, healthz)
	if pid == 0 {
		_, body := httpGet(t, healthz)
		t.Fatalf("the group's stages are not up in one process:\n%s", body)
	}

	l := newLedger()
	var mu sync.Mutex
	var lastTempfail time.Time
	var tempfails, after int
	var up time.Time
	stop := make(chan struct{})
	errs := make(chan error, clients)
	var wg sync.WaitGroup
	for w := range clients {
		wg.Go(func() {
			err := stream(g.SMTPAddrs()[0], fmt.Sprintf("g%d", w), stop, func(id, reply string, start, end time.Time) {
				l.record(id, reply)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case strings.HasPrefix(reply, "451 "):
					tempfails++
					if end.After(lastTempfail) {
						lastTempfail = end
					}
				case !strings.HasPrefix(reply, "250"):
					errs <- fmt.Errorf("message %s: %q", id, reply)
				case !up.IsZero() && start.After(up):
					after++
				}
			})
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", w, err)
			}
		})
	}
	defer func() {
		select {
		case <-stop:
		default:
			close(stop)
		}
		wg.Wait()
	}()
	waitUntil(t, time.Minute, "mail to flow", func() bool { return len(down.Messages()) >= 5*clients })
	if err := syscallKill(pid); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	waitUntil(t, time.Minute, "both stages up in a new process", func() bool {
		now := groupPID(t, healthz)
		if now != 0 && now != pid {
			mu.Lock()
			up = time.Now()
			mu.Unlock()
			return true
		}
		return false
	})
	waitUntil(t, time.Minute, "mail to flow after the restart", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return after >= 5*clients
	})
	close(stop)
	wg.Wait()
	select {
	case err := <-errs:
		t.Fatal(err)
	default:
	}
	lasted := time.Duration(0)
	if tempfails > 0 {
		lasted = lastTempfail.Sub(killed).Round(time.Millisecond)
	}
	t.Logf("kill -9 of a process group under %d clients: %d messages tempfailed, the last %v after the kill; both stages up again %v after it",
		clients, tempfails, lasted, up.Sub(killed).Round(time.Millisecond))
	l.check(t, g, down)
	for _, m := range down.Messages() {
		if !strings.Contains(string(m.Data), "\r\nX-Spam-Status: No, score=") {
			t.Fatalf("message %s passed without the headers stage's fields:\n%s", messageID(m.Data), m.Data)
		}
	}
}

// A config that a member of a process group refuses is reported at that
// member's key, as for a stage of its own.
func TestProcessGroupConfigRefused(t *testing.T) {
	conf := fmt.Sprintf(`hostname = "mx.gateway.test"
data_dir = %q
[server]
listen = ["127.0.0.1:0"]
[admin]
listen = ""
[[stage]]
name = "spam"
kind = "spam"
process = "checks"
[[stage]]
name = "headers"
kind = "headers"
process = "checks"
[stage.config]
spam_headerz = true
`, t.TempDir())
	cfg, err := policy.Parse("test.toml", []byte(conf))
	if err != nil {
		t.Fatal(err)
	}
	_, err = gateway.New(context.Background(), cfg, gateway.Options{Logger: testLogger(t),
		PluginCommand: func(kind string) []string { return []string{mailgateBin, "plugin", kind} }})
	if want := "test.toml:16: stage[1].config.spam_headerz: unknown key"; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("New: %v; want an error at %s", err, want)
	}
}
