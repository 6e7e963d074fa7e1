package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/spool"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// When the router stops for good, the gateway says so on /healthz and
// answers DATA with 451 instead of 250 for mail nobody would deliver.
func TestDeliveryStoppedIsUnhealthy(t *testing.T) {
	down := smtptest.NewServer(t)
	dir := t.TempDir()
	cfg, err := policy.Parse("test.toml", []byte(fmt.Sprintf(
		"hostname = \"mx.gateway.test\"\ndata_dir = %q\n[server]\nlisten = [\"127.0.0.1:0\"]\n[admin]\nlisten = \"127.0.0.1:0\"\n", dir)+
		routeTo(down, "dest.test")))
	if err != nil {
		t.Fatal(err)
	}
	// The router cannot read the queue when it starts.
	var broken atomic.Bool
	broken.Store(true)
	g, err := gateway.New(context.Background(), cfg, gateway.Options{Logger: testLogger(t), Spool: spool.Options{FailReads: failWhen(&broken, syscall.EIO)}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	healthz := func() (int, string) {
		resp, err := http.Get("http://" + g.AdminAddr().String() + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	deadline := time.Now().Add(waitLong)
	for code, _ := healthz(); code == 200; code, _ = healthz() {
		if time.Now().After(deadline) {
			t.Fatal("/healthz still 200 with delivery stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// The spool works again, but nothing would deliver what it takes.
	broken.Store(false)
	if code, body := healthz(); code != 503 || !strings.HasPrefix(body, "unhealthy: delivery: stopped: ") {
		t.Fatalf("/healthz: %d %q", code, body)
	}
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message("stopped@test", "hi\r\n")); !strings.HasPrefix(r, "451 4.3.0 ") {
		t.Fatalf("DATA with delivery stopped: %q", r)
	}
}
