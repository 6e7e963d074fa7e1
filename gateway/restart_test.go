package gateway

import (
	"testing"

	"github.com/mailgate/mailgate/policy"
)

// A reload is refused, naming every key, when it changes what a part
// fixed at start: here smtpd's and the router's.
func TestRestartNeeded(t *testing.T) {
	old := &policy.Config{Hostname: "mx.test", Server: policy.Server{MaxRecipients: 10}, Delivery: policy.Delivery{MaxConnections: 4}}
	cfg := *old
	if err := restartNeeded(old, &cfg); err != nil {
		t.Fatalf("unchanged: %v", err)
	}
	cfg.Hostname, cfg.Server.MaxRecipients, cfg.Delivery.MaxConnections = "mx2.test", 20, 5
	want := "hostname, server.max_recipients, delivery.max_connections changed: restart needed"
	if err := restartNeeded(old, &cfg); err == nil || err.Error() != want {
		t.Fatalf("restartNeeded = %v, want %q", err, want)
	}
}
