package gateway_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	msgdkim "github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dkim"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/smtptest"
)

// dkimSigned returns msg signed twice with go-msgauth: by sender.test
// (Ed25519, its key served by the returned DNS server) under it, and on
// top by other.test, whose key record does not exist. It returns the
// header.b of each (top first).
func dkimSigned(t *testing.T, msg string) (*dnstest.Server, string, []string) {
	t.Helper()
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32))
	dns := dnstest.NewServer(t, dnstest.Zone{
		"ed._domainkey.sender.test.": {fmt.Sprintf(`TXT "v=DKIM1; k=ed25519; p=%s"`, base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))},
		"_dmarc.sender.test.":        {`TXT "v=DMARC1; p=reject"`},
	})
	for _, d := range []string{"sender.test", "other.test"} {
		var out bytes.Buffer
		sel := map[string]string{"sender.test": "ed", "other.test": "gone"}[d]
		if err := msgdkim.Sign(&out, strings.NewReader(msg), &msgdkim.SignOptions{Domain: d, Selector: sel, Signer: key,
			HeaderCanonicalization: msgdkim.CanonicalizationRelaxed, BodyCanonicalization: msgdkim.CanonicalizationRelaxed}); err != nil {
			t.Fatal(err)
		}
		msg = out.String()
	}
	var bs []string
	for _, m := range regexp.MustCompile(`[; ]b=([A-Za-z0-9+/]{8})`).FindAllStringSubmatch(strings.ReplaceAll(msg, "\r\n ", ""), -1) {
		bs = append(bs, m[1])
	}
	if len(bs) != 2 {
		t.Fatalf("signed message has %d b= tags:\n%s", len(bs), msg)
	}
	return dns, msg, bs
}

const dkimChain = `
[[stage]]
name = "dkim"
kind = "dkim"

[[stage]]
name = "arc"
kind = "arc"

[[stage]]
name = "dmarc"
kind = "dmarc"

[[stage]]
name = "headers"
kind = "headers"
[stage.config]
authentication_results = true
`

// TestDKIMResultsReachDownstream: the dkim kind, served by the mailgate
// binary as a plugin process, verifies each signature of a message with
// its key from a loopback DNS server, and the downstream server gets one
// Authentication-Results field with an entry per signature (header.d,
// header.s, header.b), then the arc and dmarc results.
func TestDKIMResultsReachDownstream(t *testing.T) {
	dns, signed, bs := dkimSigned(t, message("dkim@test", "signed body\r\n"))
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf("\n[dns]\nservers = [%q]\n", dns.Addr())+dkimChain)
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO mail.sender.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, signed); !strings.HasPrefix(r, "250") {
		t.Fatalf("DATA: %q", r)
	}
	m := delivered(t, down, "dkim@test")
	head, _, _ := strings.Cut(string(m.Data), "\r\n\r\n")
	var ar []string
	for _, f := range strings.Split(strings.NewReplacer("\r\n ", " ", "\r\n\t", " ").Replace(head), "\r\n") {
		if v, ok := strings.CutPrefix(f, "Authentication-Results: "); ok {
			ar = append(ar, v)
		}
	}
	want := fmt.Sprintf("mx.gateway.test; dkim=permerror header.b=%s header.d=other.test header.s=gone; dkim=pass header.b=%s header.d=sender.test header.s=ed; arc=none smtp.remote-ip=127.0.0.1; dmarc=pass header.from=sender.test", bs[0], bs[1])
	if len(ar) != 1 || strings.Join(strings.Fields(ar[0]), " ") != want {
		t.Fatalf("Authentication-Results %q; want one: %q", ar, want)
	}
}

// TestDryRunDKIM: `mailgate test -json` shows the dkim, arc and dmarc
// stages' results and reasons, and the Authentication-Results field they
// lead to: sender.test's signature passes and aligns with From, so DMARC
// passes under p=reject; the message has no ARC set.
func TestDryRunDKIM(t *testing.T) {
	dns, signed, _ := dkimSigned(t, message("dry-dkim@test", "signed body\r\n"))
	dir := t.TempDir()
	conf := filepath.Join(dir, "mailgate.toml")
	os.WriteFile(conf, []byte(fmt.Sprintf("hostname = \"mx.gateway.test\"\ndata_dir = %q\n[dns]\nservers = [%q]\n[[route]]\ndomains = [\"dest.test\"]\nservers = [\"127.0.0.1:1\"]\n", dir, dns.Addr())+dkimChain), 0o644)
	msg := filepath.Join(dir, "msg.eml")
	os.WriteFile(msg, []byte(signed), 0o644)
	out, err := exec.Command(mailgateBin, "test", "-config", conf, "-client-ip", "192.0.2.10", "-helo", "mail.sender.test",
		"-from", "a@sender.test", "-to", "b@dest.test", "-json", msg).Output()
	if err != nil {
		t.Fatalf("mailgate test: %v\n%s", err, out)
	}
	var res gateway.DryRunResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	found := map[string]bool{}
	for _, s := range res.Stages {
		found[s.Kind] = true
		switch s.Kind {
		case "dkim":
			if s.Result != "pass" || !strings.Contains(s.Reason, "dkim=permerror") || !strings.Contains(s.Reason, "dkim=pass") {
				t.Errorf("dkim stage: %+v", s)
			}
		case "arc":
			if s.Result != "none" {
				t.Errorf("arc stage: %+v", s)
			}
		case "dmarc":
			if s.Result != "pass" || !strings.Contains(s.Reason, "header.from=sender.test") {
				t.Errorf("dmarc stage: %+v", s)
			}
		}
	}
	added := ""
	for _, h := range res.HeadersAdded {
		if h.Name == "Authentication-Results" {
			added = h.Value
		}
	}
	if !found["dkim"] || !found["arc"] || !found["dmarc"] || !strings.Contains(added, "header.d=sender.test header.s=ed") ||
		!strings.Contains(added, "arc=none") || !strings.Contains(added, "dmarc=pass header.from=sender.test") {
		t.Fatalf("a stage or its A-R entry is missing:\n%s", out)
	}
}

// TestHeaderBytesReachDownstream: header fields the gateway did not edit
// are relayed byte for byte, however they are written (no space after
// the colon, two spaces, a tab, a folded To, odd folding), even when a
// stage adds a field on top and removes one between them (a forged
// Authentication-Results, added below the signature as a forger would)
// and the spooled message is rewritten; so a DKIM signature with simple
// header canonicalization, which covers those bytes, passes at the
// gateway's own dkim stage (a plugin process: the fields cross the plugin
// protocol as they are written) and still passes downstream.
func TestHeaderBytesReachDownstream(t *testing.T) {
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
	dns := dnstest.NewServer(t, dnstest.Zone{
		"s1._domainkey.sender.test.": {fmt.Sprintf(`TXT "v=DKIM1; k=ed25519; p=%s"`, base64.StdEncoding.EncodeToString(key.Public().(ed25519.PublicKey)))},
		"_dmarc.sender.test.":        {`TXT "v=DMARC1; p=reject"`},
	})
	msg := "From:Alice <a@sender.test>\r\n" +
		"To:  Bob\r\n <b@dest.test>,\r\n\tcarol@dest.test \r\n" +
		"Subject:no-space\r\n" +
		"Date:\tMon, 06 Jan 2025 10:00:00 +0000\r\n" +
		"Message-ID:<bytes@test>\r\n" +
		"X-Folded:\r\n\t  first \r\n   second\t\r\n\tthird  \r\n" +
		"X-Empty:\r\n" +
		"\r\n" +
		"body  \r\n\r\n"
	var signed bytes.Buffer
	if err := msgdkim.Sign(&signed, strings.NewReader(msg), &msgdkim.SignOptions{Domain: "sender.test", Selector: "s1", Signer: key,
		HeaderCanonicalization: msgdkim.CanonicalizationSimple, BodyCanonicalization: msgdkim.CanonicalizationSimple}); err != nil {
		t.Fatal(err)
	}
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+fmt.Sprintf("\n[dns]\nservers = [%q]\n", dns.Addr())+dkimChain)
	// A field the signature does not cover (h= lists the fields signed),
	// claiming the gateway's authserv-id: the headers stage removes it.
	const forged = "Authentication-Results:mx.gateway.test; dkim=pass header.d=forged.test\r\n"
	sent := strings.Replace(signed.String(), "\r\nSubject:no-space", "\r\n"+forged+"Subject:no-space", 1)
	if sent == signed.String() {
		t.Fatal("no Subject field to put the forged field before")
	}
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO mail.sender.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@dest.test"}, sent); !strings.HasPrefix(r, "250") {
		t.Fatalf("DATA: %q", r)
	}
	data := down.WaitFor(1, waitLong)[0].Data
	// The gateway's Received and Authentication-Results go on top; below
	// them is the message as sent, every byte, but for the forged field.
	if !bytes.HasSuffix(data, signed.Bytes()) {
		t.Fatalf("the message did not arrive byte for byte; signed\n%q\ndelivered\n%q", signed.String(), data)
	}
	if !regexp.MustCompile(`Authentication-Results: mx\.gateway\.test;[^:]*dkim=pass[^;]*header\.d=sender\.test[^:]*dmarc=pass`).Match(data) {
		t.Errorf("the gateway's dkim stage did not pass the signature:\n%s", data)
	}

	// Downstream, the dkim stage verifies the message as it arrived.
	f, err := dkim.New(stages.Env{DNSServers: []string{dns.Addr()}}, stages.JSONConfig([]byte(`{}`)))
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := stages.ParseHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(br)
	v, err := f.Run(context.Background(), stages.Data, &stages.Transaction{Header: h, Body: stages.BytesBody(rest)})
	if err != nil || v.Result != "pass" {
		t.Errorf("downstream dkim: %s (%s), %v", v.Result, v.Reason, err)
	}
}
