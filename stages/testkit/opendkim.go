package testkit

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Opendkim is a real opendkim signing as a milter, with a key made for the
// test.
type Opendkim struct {
	Addr   string // host:port of its milter socket
	Domain string // the d= it signs with
	// Record is the DKIM key record (RFC 6376 §3.6.1) to publish as TXT
	// at Selector._domainkey.Domain.
	Record   string
	Selector string
}

// OpendkimOptions says how opendkim signs. Zero values take the defaults.
type OpendkimOptions struct {
	Domain           string // default example.org
	Selector         string // default test
	Canonicalization string // default relaxed/simple
	// InternalHosts are the clients whose mail it signs; default
	// 127.0.0.0/8.
	InternalHosts string
}

// StartOpendkim starts opendkim in signing mode (Debian package opendkim,
// see Need) for the length of the test.
func StartOpendkim(t testing.TB, o OpendkimOptions) *Opendkim {
	t.Helper()
	bin := Need(t, "opendkim", "opendkim")
	if o.Domain == "" {
		o.Domain = "example.org"
	}
	if o.Selector == "" {
		o.Selector = "test"
	}
	if o.Canonicalization == "" {
		o.Canonicalization = "relaxed/simple"
	}
	if o.InternalHosts == "" {
		o.InternalHosts = "127.0.0.0/8"
	}
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "test.private")
	pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
	// opendkim refuses a key others can read.
	if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
		t.Fatal(err)
	}
	addr := FreeAddr(t)
	conf := filepath.Join(dir, "opendkim.conf")
	err = os.WriteFile(conf, []byte(strings.Join([]string{
		"Syslog no",
		// RequireSafeKeys also checks every directory up to /, and
		// t.TempDir is under the world-writable /tmp.
		"RequireSafeKeys false",
		"Mode s",
		"InternalHosts " + o.InternalHosts,
		"Domain " + o.Domain,
		"Selector " + o.Selector,
		"KeyFile " + keyFile,
		"Canonicalization " + o.Canonicalization,
		"Socket inet:" + addr[strings.LastIndex(addr, ":")+1:] + "@127.0.0.1",
		"PidFile " + filepath.Join(dir, "opendkim.pid"),
		"",
	}, "\n")), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	StartDaemon(t, addr, bin, "-f", "-x", conf)
	return &Opendkim{
		Addr:     addr,
		Domain:   o.Domain,
		Selector: o.Selector,
		Record:   "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub),
	}
}

// LookupTXT answers the TXT query for the key record, as go-msgauth's
// dkim.VerifyOptions.LookupTXT wants, and nothing else.
func (o *Opendkim) LookupTXT(domain string) ([]string, error) {
	if domain != o.Selector+"._domainkey."+o.Domain {
		return nil, fmt.Errorf("no TXT record for %s", domain)
	}
	return []string{o.Record}, nil
}
