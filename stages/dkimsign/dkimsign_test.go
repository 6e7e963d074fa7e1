// A 512-bit key is made to test that it is refused.
//
//go:debug rsa1024min=0
package dkimsign

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages"
)

// testKey is a key written for a test, with its DNS record.
type testKey struct {
	file, record string
}

// writeKey makes a key for algorithm in dir, as mailgate dkim keygen does.
func writeKey(t testing.TB, dir, name, algorithm string) testKey {
	t.Helper()
	k, pemBytes, err := GenerateKey(algorithm, 2048)
	if err != nil {
		t.Fatal(err)
	}
	rec, err := KeyRecord(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, name)
	if err := os.WriteFile(file, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return testKey{file, rec}
}

// dns is a fake TXT lookup: name → record.
type dns map[string]string

func (d dns) LookupTXT(name string) ([]string, error) {
	if r, ok := d[name]; ok {
		return []string{r}, nil
	}
	return nil, fmt.Errorf("no TXT record for %s", name)
}

// newFilter builds a filter from a config written as JSON, as the plugin
// process gets it.
func newFilter(t testing.TB, cfg any) (*Filter, error) {
	t.Helper()
	b, err := json.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	f, err := New(stages.Env{Hostname: "mx.example.test"}, stages.JSONConfig(b))
	if err != nil {
		return nil, err
	}
	return f.(*Filter), nil
}

const body = "Hello,\r\n\r\nthe report is attached.  \r\n\r\n\r\n"

func outbound(from string) *stages.Transaction {
	return &stages.Transaction{
		Client: stages.Client{Addr: netip.MustParseAddr("10.0.0.7"), Trusted: true},
		From:   "alice@example.test",
		Rcpts:  []string{"bob@example.org"},
		Header: stages.Header{
			{Name: "Received", Value: "from client.example.test ([10.0.0.7])\r\n\tby mx.example.test (mailgate) with ESMTP id Q1"},
			{Name: "From", Value: "Alice <" + from + ">"},
			{Name: "To", Value: "bob@example.org"},
			{Name: "Subject", Value: "Quarterly\r\n report"},
			{Name: "Date", Value: "Mon, 06 Jan 2025 10:00:00 +0000"},
			{Name: "Message-ID", Value: "<q1@example.test>"},
			{Name: "X-Mailer", Value: "test"},
		},
		Body: stages.BytesBody(body),
	}
}

// run runs the filter and returns the verdict and the message as it
// leaves, with the verdict's edits applied.
func run(t *testing.T, f *Filter, tx *stages.Transaction) (stages.Verdict, []byte) {
	t.Helper()
	v, err := f.Run(context.Background(), stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stages.ApplyEdits(tx, v.Edits); err != nil {
		t.Fatalf("edits %+v: %v", v.Edits, err)
	}
	var b bytes.Buffer
	tx.Header.WriteTo(&b)
	b.WriteString(body)
	return v, b.Bytes()
}

func verify(t *testing.T, msg []byte, records dns) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: records.LookupTXT})
	if err != nil {
		t.Fatalf("verify: %v\n%s", err, msg)
	}
	return vs
}

// TestSignVerifies: a domain with an RSA and an Ed25519 key gets two
// signatures, relaxed/relaxed, and go-msgauth's verifier passes both
// with the records keygen prints.
func TestSignVerifies(t *testing.T) {
	dir := t.TempDir()
	rsaKey := writeKey(t, dir, "rsa.key", RSASHA256)
	edKey := writeKey(t, dir, "ed.key", Ed25519SHA256)
	f, err := newFilter(t, map[string]any{"key": []map[string]string{
		{"domain": "example.test", "selector": "r2026", "file": rsaKey.file},
		{"domain": "example.test", "selector": "e2026", "file": edKey.file, "algorithm": "ed25519-sha256"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	v, msg := run(t, f, outbound("alice@example.test"))
	if v.Result != Signed || len(v.Edits) != 2 || v.Action != stages.Continue {
		t.Fatalf("verdict %+v; want signed with two edits", v)
	}
	vs := verify(t, msg, dns{"r2026._domainkey.example.test": rsaKey.record, "e2026._domainkey.example.test": edKey.record})
	if len(vs) != 2 {
		t.Fatalf("%d signatures, want 2:\n%s", len(vs), msg)
	}
	for _, vr := range vs {
		if vr.Err != nil || vr.Domain != "example.test" {
			t.Errorf("signature d=%s: %v\n%s", vr.Domain, vr.Err, msg)
		}
	}
	for _, want := range []string{"a=rsa-sha256", "a=ed25519-sha256", "c=relaxed/relaxed"} {
		if !bytes.Contains(msg, []byte(want)) {
			t.Errorf("message lacks %q:\n%s", want, msg)
		}
	}
	if !strings.Contains(v.Reason, "header.d=example.test header.s=r2026 header.a=rsa-sha256") {
		t.Errorf("reason %q", v.Reason)
	}
}

// TestOversigning: From, Subject, To and Date are named once more than the
// message has them, the other fields of the list as often as present, and
// fields not listed not at all; a From added on the way then breaks the
// signature.
func TestOversigning(t *testing.T) {
	k := writeKey(t, t.TempDir(), "k", RSASHA256)
	f, err := newFilter(t, map[string]any{"key": []map[string]string{{"domain": "example.test", "selector": "s", "file": k.file}}})
	if err != nil {
		t.Fatal(err)
	}
	_, msg := run(t, f, outbound("alice@example.test"))
	records := dns{"s._domainkey.example.test": k.record}
	vs := verify(t, msg, records)
	if len(vs) != 1 || vs[0].Err != nil {
		t.Fatalf("verification %+v", vs)
	}
	got := vs[0].HeaderKeys
	want := []string{"From", "From", "Subject", "Subject", "Date", "Date", "Message-ID", "To", "To"}
	if !slices.Equal(got, want) {
		t.Errorf("h= %v, want %v", got, want)
	}

	// A second From appended below the signed one: the oversigned empty
	// instance no longer matches.
	forged := bytes.Replace(msg, []byte("X-Mailer: test\r\n"), []byte("X-Mailer: test\r\nFrom: mallory@evil.test\r\n"), 1)
	if vs := verify(t, forged, records); len(vs) != 1 || vs[0].Err == nil {
		t.Errorf("a message with a From added verifies: %+v", vs)
	}
}

// TestSimpleCanonicalization: with simple/simple the signature field must
// reach the verifier byte for byte as signed; the edit keeps its folding.
// A signed field written without a space after the colon is signed as it
// is relayed.
func TestSimpleCanonicalization(t *testing.T) {
	k := writeKey(t, t.TempDir(), "k", RSASHA256)
	f, err := newFilter(t, map[string]any{"canonicalization": "simple/simple",
		"key": []map[string]string{{"domain": "example.test", "selector": "s", "file": k.file}}})
	if err != nil {
		t.Fatal(err)
	}
	tx := outbound("alice@example.test")
	tx.Header[3] = stages.ParseField("Subject:Quarterly\r\n report")
	_, msg := run(t, f, tx)
	if !bytes.Contains(msg, []byte("\r\nSubject:Quarterly\r\n report\r\n")) || !bytes.Contains(msg, []byte("c=simple/simple")) {
		t.Fatalf("not signed simple/simple or Subject not as written:\n%s", msg)
	}
	vs := verify(t, msg, dns{"s._domainkey.example.test": k.record})
	if len(vs) != 1 || vs[0].Err != nil || !slices.Contains(vs[0].HeaderKeys, "Subject") {
		t.Fatalf("verification %+v\n%s", vs, msg)
	}
}

// TestWhatIsNotSigned: mail from an untrusted, unauthenticated client
// (inbound mail) and mail from a domain without a key pass unsigned; an
// authenticated client's mail is signed, and a subdomain's with its
// parent's key.
func TestWhatIsNotSigned(t *testing.T) {
	k := writeKey(t, t.TempDir(), "k", RSASHA256)
	f, err := newFilter(t, map[string]any{"key": []map[string]string{{"domain": "example.test", "selector": "s", "file": k.file}}})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name   string
		tx     func() *stages.Transaction
		result string
		d      string // the d= of the signature, when signed
	}{
		{"untrusted", func() *stages.Transaction {
			tx := outbound("alice@example.test")
			tx.Client.Trusted = false
			return tx
		}, Skipped, ""},
		{"other domain", func() *stages.Transaction { return outbound("alice@example.org") }, NoKey, ""},
		{"lookalike domain", func() *stages.Transaction { return outbound("alice@badexample.test") }, NoKey, ""},
		{"two From fields", func() *stages.Transaction {
			tx := outbound("alice@example.test")
			tx.Header = append(tx.Header, stages.Field{Name: "From", Value: "carol@example.test"})
			return tx
		}, NoKey, ""},
		{"two From addresses", func() *stages.Transaction { return outbound("alice@example.test>, <carol@example.test") }, NoKey, ""},
		{"authenticated", func() *stages.Transaction {
			tx := outbound("alice@example.test")
			tx.Client.Trusted, tx.Client.AuthUser = false, "alice"
			return tx
		}, Signed, "example.test"},
		{"subdomain", func() *stages.Transaction { return outbound("alice@Sales.Example.Test") }, Signed, "example.test"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v, msg := run(t, f, c.tx())
			if v.Result != c.result {
				t.Errorf("result %q (%s), want %q", v.Result, v.Reason, c.result)
			}
			if c.d == "" {
				if len(v.Edits) != 0 {
					t.Errorf("edits %+v on mail not to be signed", v.Edits)
				}
				return
			}
			vs := verify(t, msg, dns{"s._domainkey.example.test": k.record})
			if len(vs) != 1 || vs[0].Err != nil || vs[0].Domain != c.d {
				t.Errorf("verification %+v, want a pass for d=%s", vs, c.d)
			}
		})
	}
}

// TestBadConfig: every key that cannot be used is refused at start, as a
// ConfigError on "key" that names the key and its file.
func TestBadConfig(t *testing.T) {
	dir := t.TempDir()
	good := writeKey(t, dir, "good.key", RSASHA256)
	ed := writeKey(t, dir, "ed.key", Ed25519SHA256)
	garbage := filepath.Join(dir, "garbage.key")
	os.WriteFile(garbage, []byte("-----BEGIN PRIVATE KEY-----\nnot base64 at all\n-----END PRIVATE KEY-----\n"), 0o600)
	notPEM := filepath.Join(dir, "notpem.key")
	os.WriteFile(notPEM, []byte("v=DKIM1; k=rsa; p=MIIB"), 0o600)
	cert := filepath.Join(dir, "cert.pem")
	os.WriteFile(cert, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}), 0o600)
	weak := filepath.Join(dir, "weak.key")
	wk, _ := rsa.GenerateKey(rand.Reader, 512)
	os.WriteFile(weak, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(wk)}), 0o600)
	unreadable := filepath.Join(dir, "unreadable.key")
	os.WriteFile(unreadable, nil, 0o000)
	missing := filepath.Join(dir, "missing.key")

	key := func(kv ...string) map[string]any {
		m := map[string]string{"domain": "example.test", "selector": "s", "file": good.file}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return map[string]any{"key": []map[string]string{m}}
	}
	for _, c := range []struct {
		name string
		cfg  map[string]any
		key  string
		want []string
	}{
		{"missing file", key("file", missing), "key", []string{"key[0]", "s._domainkey.example.test", missing, "no such file"}},
		{"broken key", key("file", garbage), "key", []string{"key[0]", "s._domainkey.example.test", garbage}},
		{"not PEM", key("file", notPEM), "key", []string{"s._domainkey.example.test", notPEM, "no PEM block"}},
		{"certificate", key("file", cert), "key", []string{cert, `"CERTIFICATE"`}},
		{"wrong type", key("file", ed.file), "key", []string{ed.file, "holds an Ed25519 key; algorithm rsa-sha256 needs an RSA key"}},
		{"wrong type ed25519", key("algorithm", "ed25519-sha256"), "key", []string{good.file, "holds an RSA key; algorithm ed25519-sha256 needs an Ed25519 key"}},
		{"weak RSA", key("file", weak), "key", []string{weak, "512 bits", "RFC 8301"}},
		{"unknown algorithm", key("algorithm", "rsa-sha1"), "key", []string{`algorithm: unexpected "rsa-sha1"`, "rsa-sha256 or ed25519-sha256"}},
		{"missing domain", key("domain", ""), "key", []string{"key[0]: domain: missing"}},
		{"bad domain", key("domain", "example test"), "key", []string{`domain: unexpected "example test"`}},
		{"missing selector", key("selector", ""), "key", []string{"selector: unexpected"}},
		{"missing file key", key("file", ""), "key", []string{"file: missing", "mailgate dkim keygen"}},
		{"unknown key", key("fiel", "x"), "key", []string{`unknown key "fiel"`}},
		{"no keys", map[string]any{}, "key", []string{"no key"}},
		{"two keys one algorithm", map[string]any{"key": []map[string]string{
			{"domain": "example.test", "selector": "a", "file": good.file},
			{"domain": "example.test", "selector": "b", "file": good.file}}}, "key", []string{"key[1]", "second rsa-sha256 key for domain example.test"}},
		{"From not signed", map[string]any{"headers": []string{"Subject"}, "key": key()["key"]}, "headers", []string{`"From"`}},
		{"oversign unsigned", map[string]any{"oversign_headers": []string{"X-Mailer"}, "key": key()["key"]}, "oversign_headers", []string{`"X-Mailer" is not in headers`}},
		{"canonicalization", map[string]any{"canonicalization": "relaxed", "key": key()["key"]}, "canonicalization", []string{`unexpected "relaxed"`, "relaxed/relaxed"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := newFilter(t, c.cfg)
			var ce *stages.ConfigError
			if !errors.As(err, &ce) || ce.Key != c.key {
				t.Fatalf("error %v, want a ConfigError on %q", err, c.key)
			}
			for _, w := range c.want {
				if !strings.Contains(ce.Err.Error(), w) {
					t.Errorf("error %q lacks %q", ce.Err, w)
				}
			}
		})
	}
	if os.Getuid() != 0 { // root reads any file
		if _, err := newFilter(t, key("file", unreadable)); err == nil || !strings.Contains(err.Error(), "permission denied") {
			t.Errorf("unreadable key: %v", err)
		}
	}
}

// TestKeygenRecord: keygen's zone line splits the record into strings of
// at most 255 bytes that join to the record.
func TestKeygenRecord(t *testing.T) {
	k, _, err := GenerateKey(RSASHA256, 4096)
	if err != nil {
		t.Fatal(err)
	}
	rec, _ := KeyRecord(k.Public())
	line := ZoneLine("s", "example.test", rec)
	prefix := "s._domainkey.example.test. IN TXT "
	if !strings.HasPrefix(line, prefix) {
		t.Fatalf("line %q", line)
	}
	var joined string
	strs := regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(strings.TrimPrefix(line, prefix), -1)
	for _, m := range strs {
		if len(m[1]) > 255 {
			t.Errorf("string of %d bytes: %q", len(m[1]), m[1])
		}
		joined += m[1]
	}
	if joined != rec || len(strs) < 3 {
		t.Errorf("%d strings join to %q, want %q", len(strs), joined, rec)
	}
	if _, _, err := GenerateKey(RSASHA256, 512); err == nil {
		t.Error("a 512-bit key was made")
	}
}
