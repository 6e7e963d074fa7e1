package policy

import "testing"

// A reload is refused, naming every key, when it changes what a part
// fixed at start: here the SMTP server's and the router's.
func TestRestartNeeded(t *testing.T) {
	old := &Config{Hostname: "mx.test", Server: Server{MaxRecipients: 10}, Delivery: Delivery{MaxConnections: 4}}
	cfg := *old
	if err := RestartNeeded(old, &cfg); err != nil {
		t.Fatalf("unchanged: %v", err)
	}
	cfg.Hostname, cfg.Server.MaxRecipients, cfg.Delivery.MaxConnections = "mx2.test", 20, 5
	want := "hostname, server.max_recipients, delivery.max_connections changed: restart needed"
	if err := RestartNeeded(old, &cfg); err == nil || err.Error() != want {
		t.Fatalf("RestartNeeded = %v, want %q", err, want)
	}
}

// TLS files may change with a reload (a renewal, see smtpd's
// TestCertReload); turning STARTTLS on or off, or the PROXY protocol
// settings, may not.
func TestRestartNeededTLSAndProxy(t *testing.T) {
	old := &Config{Server: Server{TLSCert: "a.pem", TLSKey: "a.key"}}
	cfg := *old
	cfg.Server.TLSCert, cfg.Server.TLSKey = "b.pem", "b.key"
	if err := RestartNeeded(old, &cfg); err != nil {
		t.Fatalf("new TLS files: %v", err)
	}
	cfg.Server.TLSCert, cfg.Server.TLSKey = "", ""
	cfg.Server.ProxyProtocol, cfg.Server.ProxyTrusted = true, []string{"10.0.0.0/8"}
	want := "server.tls_cert, server.proxy_protocol, server.proxy_trusted changed: restart needed"
	if err := RestartNeeded(old, &cfg); err == nil || err.Error() != want {
		t.Fatalf("RestartNeeded = %v, want %q", err, want)
	}
}

// [cluster] names the engines the parts were opened on, and the node's
// name they write under.
func TestRestartNeededCluster(t *testing.T) {
	old := &Config{Cluster: Cluster{Redis: "redis://a:6379/0", Node: "mx1"}}
	cfg := *old
	cfg.Cluster.Node = "mx2"
	want := "cluster changed: restart needed"
	if err := RestartNeeded(old, &cfg); err == nil || err.Error() != want {
		t.Fatalf("RestartNeeded = %v, want %q", err, want)
	}
}

// The console's listener and whether it speaks TLS are fixed at start;
// its certificate files, users and the rest follow a reload.
func TestRestartNeededWeb(t *testing.T) {
	old := &Config{Web: Web{Listen: "127.0.0.1:8080", TLSCert: "a.pem", TLSKey: "a.key"}}
	cfg := *old
	cfg.Web.TLSCert, cfg.Web.TLSKey, cfg.Web.Users = "b.pem", "b.key", []WebUser{{Name: "alice"}}
	if err := RestartNeeded(old, &cfg); err != nil {
		t.Fatalf("new TLS files and users: %v", err)
	}
	cfg.Web.Listen, cfg.Web.TLSCert, cfg.Web.TLSKey = "127.0.0.1:8081", "", ""
	want := "web.listen, web.tls_cert changed: restart needed"
	if err := RestartNeeded(old, &cfg); err == nil || err.Error() != want {
		t.Fatalf("RestartNeeded = %v, want %q", err, want)
	}
}
