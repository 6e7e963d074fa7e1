package arc

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
)

// testKey is a sealing key written to a file, with the TXT record that
// publishes its public half.
type testKey struct {
	file, record string
}

func writeKey(t *testing.T, key crypto.Signer) testKey {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "seal.key")
	if err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	var record string
	switch pub := key.Public().(type) {
	case ed25519.PublicKey:
		record = "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(pub)
	default:
		spki, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		record = "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(spki)
	}
	return testKey{file, record}
}

func rsaKey(t *testing.T) crypto.Signer {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func edKey(t *testing.T) crypto.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// txtRecord is a zone entry for a TXT value, in 255-byte strings.
func txtRecord(v string) string {
	var parts []string
	for len(v) > 255 {
		parts, v = append(parts, v[:255]), v[255:]
	}
	return "TXT " + fmt.Sprintf("%q", strings.Join(append(parts, v), "\x00"))
}

// newStage builds an arc stage from a [stage.config] written as JSON,
// resolving through srv.
func newStage(t *testing.T, srv *dnstest.Server, hostname, config string) *Filter {
	t.Helper()
	f, err := New(stages.Env{Hostname: hostname, DNSServers: []string{srv.Addr()}, DNSTimeout: 5 * time.Second}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatalf("New(%s): %v", config, err)
	}
	return f.(*Filter)
}

const testMessage = "From: Joe <joe@example.com>\r\nTo: list@lists.example.org\r\nSubject: hello\r\n" +
	"Date: Thu, 14 Jan 2015 15:00:01 -0800\r\nMessage-ID: <1@example.com>\r\n\r\nHi,\r\nthis is a test.\r\n"

func testTx(t *testing.T, msg string) *stages.Transaction {
	t.Helper()
	h, body := parseMessage(t, msg)
	return &stages.Transaction{Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.1")}, Header: h, Body: body,
		Results: []stages.Result{{Stage: "spf", Kind: "spf", Result: "pass", Reason: "spf=pass smtp.mailfrom=example.com"}}}
}

// hop runs a sealing stage on tx and applies its edits as the pipeline
// does, returning its verdict.
func hop(t *testing.T, f *Filter, tx *stages.Transaction) stages.Verdict {
	t.Helper()
	v, err := f.Run(context.Background(), stages.Data, tx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stages.ApplyEdits(tx, v.Edits); err != nil {
		t.Fatalf("edits %+v: %v", v.Edits, err)
	}
	return v
}

// TestSealAndVerify forwards a message through two sealing hops, one RSA
// and one Ed25519 (RFC 8463), and checks what a third, verifying stage
// reports at each step, as the dmarc stage and the headers stage read it.
func TestSealAndVerify(t *testing.T) {
	k1, k2 := writeKey(t, rsaKey(t)), writeKey(t, edKey(t))
	srv := dnstest.NewServer(t, dnstest.Zone{
		"s1._domainkey.lists.example.org": {txtRecord(k1.record)},
		"s2._domainkey.fwd.example.net":   {txtRecord(k2.record)},
	})
	seal1 := newStage(t, srv, "mx.lists.example.org", fmt.Sprintf(`{"seal": true, "seal_domain": "lists.example.org", "seal_selector": "s1", "seal_key": %q}`, k1.file))
	seal2 := newStage(t, srv, "mx.fwd.example.net", fmt.Sprintf(`{"seal": true, "seal_domain": "fwd.example.net", "seal_selector": "s2", "seal_key": %q}`, k2.file))
	verify := newStage(t, srv, "mx.example.test", `{}`)
	if info := verify.Info(); info.Edits || info.Needs&stages.NeedResults != 0 || info.Phases != stages.Data {
		t.Errorf("verifying stage Info %+v; want data, no edits, no results", info)
	}
	if info := seal1.Info(); !info.Edits || info.Needs&stages.NeedResults == 0 {
		t.Errorf("sealing stage Info %+v; want edits and results", info)
	}

	tx := testTx(t, testMessage)
	// A reason that is not resinfo whole stays out of the AAR; one that
	// is goes in as authres reads and writes it.
	tx.Results = append(tx.Results,
		stages.Result{Stage: "dkim", Kind: "dkim", Result: "pass", Reason: "dkim=pass header.d=(unterminated"},
		stages.Result{Stage: "dmarc", Kind: "dmarc", Result: "pass", Reason: "dmarc=pass (aligned) header.from=Example.COM"})
	if v := hop(t, seal1, tx); v.Result != "none" || v.Reason != "arc=none smtp.remote-ip=192.0.2.1" || len(v.Edits) != 3 {
		t.Fatalf("first hop: %+v", v)
	}
	if got := tx.Header[2]; got.Name != fieldAAR || stages.Unfold(got.Value) != "i=1; mx.lists.example.org; arc=none smtp.remote-ip=192.0.2.1; spf=pass smtp.mailfrom=example.com; dmarc=pass header.from=Example.COM" {
		t.Errorf("AAR %q", got.Value)
	}
	v, _ := verify.Run(context.Background(), stages.Data, tx)
	if v.Result != "pass" || v.Reason != "arc=pass header.oldest-pass=0 smtp.remote-ip=192.0.2.1" || v.Action != stages.Continue || len(v.Edits) != 0 {
		t.Fatalf("after one hop: %+v", v)
	}

	// The second hop verifies the message as it arrives, then changes
	// the body, as a list adding a footer does, and seals: the chain
	// passes, and oldest-pass says the first hop's message signature no
	// longer verifies (RFC 8617 §5.2 step 5).
	arrived := seal2.v.check(context.Background(), tx.Header, tx.Body)
	if arrived.CV != Pass {
		t.Fatalf("second hop saw %+v", arrived)
	}
	tx.Body = stages.BytesBody(append([]byte("Hi,\r\nthis is a test.\r\n"), "-- \r\nlist footer\r\n"...))
	edits, err := seal2.sealer.seal(context.Background(), tx, arrived, time.Now())
	if err != nil || len(edits) != 3 {
		t.Fatalf("second hop's seal: %v, %v", edits, err)
	}
	if err := stages.ApplyEdits(tx, edits); err != nil {
		t.Fatal(err)
	}
	v, _ = verify.Run(context.Background(), stages.Data, tx)
	if v.Result != "pass" || v.Reason != "arc=pass header.oldest-pass=2 smtp.remote-ip=192.0.2.1" {
		t.Fatalf("after two hops: %+v", v)
	}
	sealers := stages.Header(tx.Header).Values(fieldAS)
	if len(sealers) != 2 || !strings.Contains(sealers[0], "d=fwd.example.net") || !strings.Contains(sealers[0], "a=ed25519-sha256") {
		t.Errorf("ARC-Seal fields %q", sealers)
	}

	// A change after the last seal breaks the newest AMS: fail, and a
	// sealing hop adds a set over its own fields only (RFC 8617 §5.1.2).
	tx.Header = append(stages.Header{}, tx.Header...)
	for i, f := range tx.Header {
		if f.Name == "Subject" {
			tx.Header[i].Value = "[list] hello"
		}
	}
	v, _ = verify.Run(context.Background(), stages.Data, tx)
	if v.Result != "fail" || !strings.Contains(v.Reason, "ARC-Message-Signature i=2") {
		t.Fatalf("after a change: %+v", v)
	}
	if v := hop(t, seal1, tx); v.Result != "fail" || len(v.Edits) != 3 || !strings.Contains(v.Edits[0].Value, "cv=fail") || !strings.Contains(v.Edits[0].Value, "i=3") {
		t.Fatalf("sealing a failed chain: %+v", v)
	}
	v, _ = verify.Run(context.Background(), stages.Data, tx)
	if v.Result != "fail" || !strings.Contains(v.Reason, "cv=fail") {
		t.Errorf("a chain sealed with cv=fail: %+v", v)
	}
	// ... and nobody seals it again.
	if v := hop(t, seal2, tx); len(v.Edits) != 0 {
		t.Errorf("sealed again after cv=fail: %+v", v.Edits)
	}
}

// TestKeyProblems: the key record decides, and a DNS failure is a fail
// whose reason says so, within the stage's deadline.
func TestKeyProblems(t *testing.T) {
	k := writeKey(t, rsaKey(t))
	srv := dnstest.NewServer(t, dnstest.Zone{
		"s1._domainkey.a.example": {txtRecord(k.record)},
	})
	seal := newStage(t, srv, "mx.a.example", fmt.Sprintf(`{"seal": true, "seal_domain": "a.example", "seal_selector": "s1", "seal_key": %q}`, k.file))
	tx := testTx(t, testMessage)
	hop(t, seal, tx)
	verify := newStage(t, srv, "mx.example.test", `{"dns_timeout": "1s", "cache_size": 0}`)

	for _, c := range []struct {
		name   string
		record []string
		reason string
	}{
		{"revoked", []string{`TXT "v=DKIM1; k=rsa; p="`}, "key revoked"},
		{"no record", nil, "no key record"},
		{"not a key", []string{`TXT "v=DKIM1; k=rsa; p=AAAA"`}, "not an RSA public key"},
		{"wrong type", []string{txtRecord(strings.Replace(k.record, "k=rsa", "k=ed25519", 1))}, "ed25519 key of"},
		{"servfail", []string{"SERVFAIL"}, "temporary DNS failure"},
	} {
		srv.Set("s1._domainkey.a.example", c.record...)
		v, err := verify.Run(context.Background(), stages.Data, tx)
		if err != nil || v.Result != "fail" || !strings.Contains(v.Reason, c.reason) {
			t.Errorf("%s: %+v, %v; want fail with %q", c.name, v, err, c.reason)
		}
	}

	// A key server that never answers: the stage's context ends the
	// wait (the gateway cancels it at the stage's timeout). It is
	// canceled once the query has reached the server, so that nothing
	// depends on how fast the machine is.
	srv.Set("s1._domainkey.a.example", "TIMEOUT")
	slow := newStage(t, srv, "mx.example.test", `{"dns_timeout": "1h", "cache_size": 0}`)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	before := srv.Queries()
	go func() {
		for srv.Queries() == before && ctx.Err() == nil {
			time.Sleep(time.Millisecond)
		}
		cancel()
	}()
	v, err := slow.Run(ctx, stages.Data, tx)
	if err != nil || v.Result != "fail" || !strings.Contains(v.Reason, "temporary DNS failure") {
		t.Errorf("timeout: %+v, %v", v, err)
	}
}
