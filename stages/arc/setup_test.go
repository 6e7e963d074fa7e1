//go:debug rsa1024min=0

// The directive lets the test make a 512-bit key, which Go refuses by
// default, to see the stage refuse it itself (RFC 8301 §3.2).

package arc

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// TestConfigErrors: every unusable sealing setting is refused at start,
// naming its key, as the gateway shows it with the file and line.
func TestConfigErrors(t *testing.T) {
	srv := dnstest.NewServer(t, nil)
	good := writeKey(t, edKey(t))
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("not a key"), 0o600)
	small, _ := rsa.GenerateKey(rand.Reader, 512)
	smallFile := filepath.Join(dir, "small.key")
	os.WriteFile(smallFile, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(small)}), 0o600)

	seal := func(domain, selector, key string) string {
		return fmt.Sprintf(`{"seal": true, "seal_domain": %q, "seal_selector": %q, "seal_key": %q}`, domain, selector, key)
	}
	for _, c := range []struct {
		config, key, msg string
	}{
		{seal("example.org", "s", filepath.Join(dir, "missing.key")), "seal_key", "no such file"},
		{seal("example.org", "s", garbage), "seal_key", "no PEM block"},
		{seal("example.org", "s", smallFile), "seal_key", "512 bits"},
		{`{"seal": true, "seal_domain": "example.org", "seal_selector": "s"}`, "seal_key", "missing"},
		{seal("", "s", good.file), "seal_domain", "expect the domain"},
		{seal("example..org", "s", good.file), "seal_domain", "expect the domain"},
		{seal("example.org", "a b", good.file), "seal_selector", "expect a selector"},
		{fmt.Sprintf(`{"seal_key": %q}`, good.file), "seal_key", "seal is false"},
		{`{"dns_timeout": "0s"}`, "dns_timeout", "above 0"},
		{`{"cache_size": -1}`, "cache_size", "expect 0"},
		{`{"sael": true}`, "sael", ""},
	} {
		_, err := New(stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(c.config)))
		var ce *stages.ConfigError
		if !errors.As(err, &ce) || ce.Key != c.key || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: %v; want a config error on %s saying %q", c.config, err, c.key, c.msg)
		}
	}
	if _, err := New(stages.Env{Hostname: "mx.example.test", DNSServers: []string{srv.Addr()}}, stages.JSONConfig([]byte(seal("example.org", "s", good.file)))); err != nil {
		t.Errorf("a good sealing config: %v", err)
	}
}
