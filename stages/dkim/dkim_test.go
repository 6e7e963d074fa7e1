package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

const testMsg = "From: Joe <joe@example.test>\r\nTo: mary@dest.test\r\nSubject: hello\r\nDate: Sun, 22 Nov 2026 10:00:00 +0000\r\n\r\nHi Mary,\r\n\r\nsee you.\r\n"

// testKeys are the RFC 8463 keys, published at ed._domainkey.example.test
// and rsa._domainkey.example.test.
func testKeys(t testing.TB) (ed25519.PrivateKey, crypto.Signer) {
	t.Helper()
	seed, err := os.ReadFile("testdata/rfc8463/ed25519-seed.b64")
	if err != nil {
		t.Fatal(err)
	}
	raw, err := base64.StdEncoding.DecodeString(strings.TrimSpace(string(seed)))
	if err != nil {
		t.Fatal(err)
	}
	pemData, err := os.ReadFile("testdata/rfc8463/rsa-private.pem")
	if err != nil {
		t.Fatal(err)
	}
	blk, _ := pem.Decode(pemData)
	rk, err := x509.ParsePKCS1PrivateKey(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(raw), rk
}

// testServer serves the test keys and some broken ones.
func testServer(t testing.TB) *dnstest.Server {
	t.Helper()
	ed, rk := testKeys(t)
	der, _ := x509.MarshalPKIXPublicKey(rk.Public())
	srv := dnstest.NewServer(t, dnstest.Zone{
		"slow._domainkey.example.test":   {"TIMEOUT"},
		"broken._domainkey.example.test": {"SERVFAIL"},
	})
	srv.Add(txtRR("ed._domainkey.example.test", "v=DKIM1; k=ed25519; p="+base64.StdEncoding.EncodeToString(ed.Public().(ed25519.PublicKey))))
	srv.Add(txtRR("rsa._domainkey.example.test", "v=DKIM1; k=rsa; p="+base64.StdEncoding.EncodeToString(der)))
	srv.Add(txtRR("bad._domainkey.example.test", "v=DKIM1; k=rsa; p=!!notbase64"))
	return srv
}

// goMsgauthSign signs msg with go-msgauth's signer: an implementation
// other than ours makes the signatures the stage must pass.
func goMsgauthSign(t testing.TB, msg string, selector string, key crypto.Signer, canon msgdkim.Canonicalization) string {
	t.Helper()
	var out bytes.Buffer
	err := msgdkim.Sign(&out, strings.NewReader(msg), &msgdkim.SignOptions{Domain: "example.test", Selector: selector, Signer: key,
		HeaderCanonicalization: canon, BodyCanonicalization: canon, HeaderKeys: []string{"From", "To", "Subject", "Date"}})
	if err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// handSign signs msg with Ed25519 and the given extra tags (l= among them)
// with this package's canonicalization: go-msgauth's signer has no l=.
func handSign(t testing.TB, msg, extra string, bodyLen int64) string {
	t.Helper()
	ed, _ := testKeys(t)
	h, body := splitMessage(t, []byte(msg))
	bh := dkimcore.NewBodyHasher(dkimcore.Relaxed, sha256.New(), bodyLen)
	r, _ := body.Open()
	io.Copy(bh, r)
	bh.Close()
	value := fmt.Sprintf("v=1; a=ed25519-sha256; c=relaxed/relaxed; d=example.test; s=ed; h=from:to:subject; %sbh=%s; b=",
		extra, base64.StdEncoding.EncodeToString(bh.Sum()))
	hh := sha256.New()
	hh.Write(dkimcore.HeaderData(dkimcore.Relaxed, dkimcore.SignedFields(h, []string{"from", "to", "subject"}), "DKIM-Signature: "+value))
	sig := ed25519.Sign(ed, hh.Sum(nil))
	return "DKIM-Signature: " + value + base64.StdEncoding.EncodeToString(sig) + "\r\n" + msg
}

// run runs a dkim stage asking srv on the message.
func run(t testing.TB, srv *dnstest.Server, msg string, config string) stages.Verdict {
	t.Helper()
	f, err := New(stages.Env{DNSServers: []string{srv.Addr()}, DNSTimeout: 2 * time.Second}, stages.JSONConfig([]byte(config)))
	if err != nil {
		t.Fatal(err)
	}
	h, b := splitMessage(t, []byte(msg))
	v, err := f.Run(context.Background(), stages.Data, &stages.Transaction{Header: h, Body: b})
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestSignedByGoMsgauth(t *testing.T) {
	srv := testServer(t)
	ed, rk := testKeys(t)
	for _, canon := range []msgdkim.Canonicalization{msgdkim.CanonicalizationSimple, msgdkim.CanonicalizationRelaxed} {
		for sel, key := range map[string]crypto.Signer{"ed": ed, "rsa": rk} {
			signed := goMsgauthSign(t, testMsg, sel, key, canon)
			v := run(t, srv, signed, "{}")
			if v.Result != Pass || !strings.HasPrefix(v.Reason, "dkim=pass header.b=") || !strings.Contains(v.Reason, "header.d=example.test header.s="+sel) {
				t.Errorf("%s %s: %s %q", sel, canon, v.Result, v.Reason)
			}
			// The body changed after signing.
			v = run(t, srv, strings.Replace(signed, "see you.", "see you soon.", 1), "{}")
			if v.Result != Fail || !strings.Contains(v.Reason, `reason="body hash did not verify"`) {
				t.Errorf("%s %s, body changed: %s %q", sel, canon, v.Result, v.Reason)
			}
			// A signed header field changed.
			v = run(t, srv, strings.Replace(signed, "Subject: hello", "Subject: hullo", 1), "{}")
			if v.Result != Fail || !strings.Contains(v.Reason, `reason="signature did not verify"`) {
				t.Errorf("%s %s, subject changed: %s %q", sel, canon, v.Result, v.Reason)
			}
		}
	}
}

func TestBodyLength(t *testing.T) {
	srv := testServer(t)
	n := int64(len("Hi Mary,\r\n\r\nsee you.\r\n"))
	signed := handSign(t, testMsg, fmt.Sprintf("l=%d; ", n), n)
	if v := run(t, srv, signed, "{}"); v.Result != Pass {
		t.Errorf("l= covering the body: %s %q", v.Result, v.Reason)
	}
	// Content appended past l= is flagged, and never passes.
	v := run(t, srv, signed+"Click http://evil.test/ now\r\n", "{}")
	if v.Result != Policy || !strings.Contains(v.Reason, `dkim=policy reason="29 octets of the body past the signed length are not signed" header.b=`) {
		t.Errorf("content past l=: %s %q", v.Result, v.Reason)
	}
	// A body shorter than l= is not what was signed.
	short := handSign(t, testMsg, fmt.Sprintf("l=%d; ", n+10), n+10)
	if v := run(t, srv, short, "{}"); v.Result != PermError || !strings.Contains(v.Reason, `reason="the signed length is past the end of the body"`) {
		t.Errorf("l= past the body: %s %q", v.Result, v.Reason)
	}
	huge := handSign(t, testMsg, "l=999999999999999999999999999999; ", -1)
	if v := run(t, srv, huge, "{}"); v.Result != PermError {
		t.Errorf("l= over 63 bits: %s %q", v.Result, v.Reason)
	}
}

func TestKeyProblems(t *testing.T) {
	srv := testServer(t)
	for sel, want := range map[string]string{
		"slow":    `dkim=temperror reason="key lookup failed"`,
		"broken":  `dkim=temperror reason="key lookup failed"`,
		"missing": `dkim=permerror reason="no key record"`,
		"bad":     `dkim=permerror reason="bad base64 in key record"`,
		"rsa":     `dkim=permerror reason="key type does not match the algorithm"`,
	} {
		signed := strings.Replace(handSign(t, testMsg, "", -1), "s=ed;", "s="+sel+";", 1)
		v := run(t, srv, signed, `{"dns_timeout": "1s"}`)
		if !strings.HasPrefix(v.Reason, want+" header.b=") || v.Result != strings.TrimPrefix(strings.Fields(want)[0], "dkim=") {
			t.Errorf("selector %s: %s %q; want %s", sel, v.Result, v.Reason, want)
		}
	}
}

// TestDeadline: a key lookup ends with the stage's deadline (ctx), not the
// resolver's much longer timeout.
func TestDeadline(t *testing.T) {
	srv := testServer(t)
	res, err := resolver.New([]string{srv.Addr()}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	f := &Filter{v: &verifier{lookup: dkimcore.ResolverTXT(res), maxSigs: 10, now: time.Now}}
	h, b := splitMessage(t, []byte(strings.Replace(handSign(t, testMsg, "", -1), "s=ed;", "s=slow;", 1)))
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	v, err := f.Run(ctx, stages.Data, &stages.Transaction{Header: h, Body: b})
	if err == nil && v.Result != TempError {
		t.Errorf("%s %q", v.Result, v.Reason)
	}
}

func TestUnsignedAndDomainKeys(t *testing.T) {
	srv := testServer(t)
	v := run(t, srv, testMsg, "{}")
	if v.Result != None || v.Reason != "dkim=none" {
		t.Errorf("unsigned: %s %q", v.Result, v.Reason)
	}
	v = run(t, srv, "DomainKey-Signature: a=rsa-sha1; d=example.test; s=rsa; b=AAAA\r\n"+testMsg, "{}")
	if v.Result != None {
		t.Errorf("DomainKeys only: %s %q", v.Result, v.Reason)
	}
}

// TestHeaderOnly: a message that is all header, without the blank line,
// verifies (its body is empty).
func TestHeaderOnly(t *testing.T) {
	srv := testServer(t)
	msg := strings.SplitN(testMsg, "\r\n\r\n", 2)[0] + "\r\n\r\n"
	signed := handSign(t, msg, "", -1)
	if v := run(t, srv, strings.TrimSuffix(signed, "\r\n"), "{}"); v.Result != Pass {
		t.Errorf("header only: %s %q", v.Result, v.Reason)
	}
}

// TestManySignatures: 1,000 signatures cost what max_signatures of them
// cost, and the reason says how many were left out.
func TestManySignatures(t *testing.T) {
	srv := testServer(t)
	signed := handSign(t, testMsg, "", -1)
	sig, rest, _ := strings.Cut(signed, "\r\n")
	var b strings.Builder
	for i := range 1000 {
		if i%2 == 0 {
			b.WriteString(sig + "\r\n")
		} else {
			// a distinct selector each time: still one query per evaluated signature at most
			b.WriteString(strings.Replace(sig, "s=ed;", fmt.Sprintf("s=x%d;", i), 1) + "\r\n")
		}
	}
	before := srv.Queries()
	v := run(t, srv, b.String()+rest, "{}")
	if v.Result != Pass {
		t.Errorf("result %s", v.Result)
	}
	entries := strings.Split(v.Reason, "; ")
	if len(entries) != 11 || entries[10] != `dkim=neutral reason="990 more signatures not evaluated, over the limit of 10"` {
		t.Errorf("%d entries, last %q", len(entries), entries[len(entries)-1])
	}
	if q := srv.Queries() - before; q > 6 {
		t.Errorf("%d DNS queries for 10 evaluated signatures with 6 distinct keys", q)
	}
}

// TestBadSignatures: malformed, huge and duplicated fields give a result.
func TestBadSignatures(t *testing.T) {
	srv := testServer(t)
	signed := handSign(t, testMsg, "", -1)
	sig, rest, _ := strings.Cut(signed, "\r\n")
	hugeH := "DKIM-Signature: v=1; a=ed25519-sha256; d=example.test; s=ed; bh=AAAA; b=AAAA; h=" + strings.Repeat("from:", 200000) + "from"
	for name, tc := range map[string]struct{ fields, want string }{
		"no tags":      {"DKIM-Signature: garbage", PermError},
		"empty":        {"DKIM-Signature:", PermError},
		"duplicate a":  {strings.Replace(sig, "a=ed25519-sha256;", "a=ed25519-sha256; a=rsa-sha256;", 1), PermError},
		"no from":      {strings.Replace(sig, "h=from:to:subject", "h=to:subject", 1), PermError},
		"rsa-sha1":     {strings.Replace(sig, "a=ed25519-sha256", "a=rsa-sha1", 1), PermError},
		"bad i":        {strings.Replace(sig, "d=example.test;", "d=example.test; i=joe@evil.test;", 1), PermError},
		"expired":      {strings.Replace(sig, "d=example.test;", "d=example.test; t=1000; x=2000;", 1), PermError},
		"bad base64":   {strings.Replace(sig, "bh=", "bh=!", 1), PermError},
		"huge b":       {sig[:strings.LastIndex(sig, "b=")+2] + strings.Repeat("QUFB", 250000), Fail},
		"huge h":       {hugeH, Fail},
		"many tags":    {"DKIM-Signature: " + strings.Repeat("x=1; ", 1000), PermError},
		"duplicated":   {sig + "\r\n" + sig + "\r\n" + sig, Pass},
		"weird d":      {strings.Replace(sig, "d=example.test;", "d=exa mple\"; test;", 1), PermError},
		"bad and good": {"DKIM-Signature: v=1\r\n" + sig, Pass},
	} {
		v := run(t, srv, tc.fields+"\r\n"+rest, "{}")
		if v.Result != tc.want {
			t.Errorf("%s: %s %.80q; want %s", name, v.Result, v.Reason, tc.want)
		}
		if strings.Count(v.Reason, "dkim=") != strings.Count(tc.fields, "DKIM-Signature:") {
			t.Errorf("%s: reason %.80q has not one entry per signature", name, v.Reason)
		}
	}
}
