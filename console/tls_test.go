package console

import (
	"crypto/tls"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestServeTLS: with tls_cert and tls_key the console speaks HTTPS only,
// sends HSTS and a __Host- cookie, and serves renewed certificate files
// without a restart.
func TestServeTLS(t *testing.T) {
	e := newTestEnv(t, "")
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	testkit.WriteCert(t, cert, key, "console.example.test")
	cfg := *e.c.opts.Config()
	cfg.Web.Listen, cfg.Web.TLSCert, cfg.Web.TLSKey = "127.0.0.1:0", cert, key
	cfg.Web.Hosts = append(cfg.Web.Hosts, "127.0.0.1") // reached by its address here
	e.c.opts.Config = func() *policy.Config { return &cfg }
	srv, err := e.c.Serve()
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	var seen []string
	client := &http.Client{Timeout: 30 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true,
			VerifyConnection: func(cs tls.ConnectionState) error {
				seen = append(seen, cs.PeerCertificates[0].SerialNumber.String())
				return nil
			}}, DisableKeepAlives: true}}
	base := "https://" + srv.Addr().String()
	resp, err := client.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Strict-Transport-Security") == "" {
		t.Fatalf("GET /login: %d, HSTS %q", resp.StatusCode, resp.Header.Get("Strict-Transport-Security"))
	}
	req, _ := http.NewRequest(http.MethodPost, base+"/login", strings.NewReader(url.Values{"name": {"admin"}, "password": {testPassword}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err = client.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if ck := resp.Header.Get("Set-Cookie"); !strings.HasPrefix(ck, "__Host-mailgate_session=") || !strings.Contains(ck, "Secure") {
		t.Errorf("cookie %q, want __Host- and Secure", ck)
	}
	if resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + srv.Addr().String() + "/login"); err == nil && resp.StatusCode == http.StatusOK {
		t.Error("plain HTTP served on a TLS listener")
	}
	// A renewal: new files renamed into place.
	testkit.WriteCert(t, cert, key, "console.example.test")
	resp, err = client.Get(base + "/login")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(seen) != 3 || seen[2] == seen[0] {
		t.Fatalf("certificates served %v: the renewed one is not", seen)
	}
}
