package gateway_test

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages/dkimsign"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestDKIMSignThroughGateway: a message from a trusted client goes out
// through a dkim-sign stage configured BEFORE a headers stage that edits
// signed fields, with a subject tag added by the policy after every stage.
// The dkim-sign stage seals, so it runs last: the bytes that reach the
// downstream server carry an RSA and an Ed25519 signature, and both verify
// with a real opendkim and with go-msgauth, in relaxed and in simple
// canonicalization. (A field without a space after its colon is left to
// the stage's tests: opendkim's test mode, -t, puts the space back before
// it verifies, where opendkim as a milter asks for the bytes.)
func TestDKIMSignThroughGateway(t *testing.T) {
	for _, canon := range []string{"relaxed/relaxed", "simple/simple"} {
		t.Run(canon, func(t *testing.T) { testDKIMSign(t, canon) })
	}
}

func testDKIMSign(t *testing.T, canon string) {
	dir := t.TempDir()
	records := map[string]string{}
	keyFile := func(selector, algorithm string) string {
		k, pemBytes, err := dkimsign.GenerateKey(algorithm, 2048)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := dkimsign.KeyRecord(k.Public())
		if err != nil {
			t.Fatal(err)
		}
		records[selector+"._domainkey.example.test"] = rec
		file := filepath.Join(dir, selector+".key")
		if err := os.WriteFile(file, pemBytes, 0o600); err != nil {
			t.Fatal(err)
		}
		return file
	}
	rsaFile, edFile := keyFile("r2026", dkimsign.RSASHA256), keyFile("e2026", dkimsign.Ed25519SHA256)

	down := smtptest.NewServer(t)
	g := startGateway(t, "[server]\nlisten = [\"127.0.0.1:0\"]\ntrusted_networks = [\"127.0.0.0/8\"]\n"+routeTo(down, "dest.test")+fmt.Sprintf(`
[[stage]]
name = "sign"
kind = "dkim-sign"
[stage.config]
canonicalization = %q
headers = ["From", "To", "Subject", "Date", "Message-ID", "Reply-To", "X-Tight"]
[[stage.config.key]]
domain = "example.test"
selector = "r2026"
file = %q
[[stage.config.key]]
domain = "example.test"
selector = "e2026"
file = %q
algorithm = "ed25519-sha256"

[[stage]]
name = "rewrite"
kind = "headers"
[[stage.config.rule]]
action = "rewrite"
name = "Subject"
pattern = "draft"
replacement = "final"
[[stage.config.rule]]
action = "add"
name = "Reply-To"
value = "team@example.test"

[[stage]]
name = "score"
kind = "plugin"
path = %q
[stage.config]
score = 1.0                 # in each of the 5 phases: 5 at data

[policy]
tag_score = 5.0
quarantine_score = 50.0
reject_score = 100.0
subject_tag = "[EXT]"
`, canon, rsaFile, edFile, testPluginBin))
	c := dial(t, g.SMTPAddrs()[0])
	c.Cmd("EHLO client.example.test", "250")
	msg := "From: Alice <alice@example.test>\r\nTo: b@dest.test\r\nSubject: the draft report\r\n" +
		"Date: Mon, 06 Jan 2025 10:00:00 +0000\r\nMessage-ID: <sign1@example.test>\r\nX-Tight: value\r\n\r\n" +
		"Signed body.\r\n\r\nTrailing blank lines and spaces  \r\n\r\n\r\n"
	if r := c.SendMail("alice@example.test", []string{"b@dest.test"}, msg); !strings.HasPrefix(r, "250") {
		t.Fatal(r)
	}
	data := down.WaitFor(1, waitLong)[0].Data
	for _, want := range []string{"Subject: [EXT] the final report\r\n", "Reply-To: team@example.test\r\n", "\r\nX-Tight: value\r\n", "c=" + canon} {
		if !bytes.Contains(data, []byte(want)) {
			t.Fatalf("the edits did not happen: no %q in\n%s", want, data)
		}
	}
	if !bytes.HasPrefix(data, []byte("DKIM-Signature: ")) {
		t.Errorf("the signature is not on top:\n%s", data)
	}

	vs, err := dkim.VerifyWithOptions(bytes.NewReader(data), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		if r, ok := records[name]; ok {
			return []string{r}, nil
		}
		return nil, fmt.Errorf("no TXT record for %s", name)
	}})
	if err != nil || len(vs) != 2 {
		t.Fatalf("go-msgauth: %v, %d signatures, want 2:\n%s", err, len(vs), data)
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("go-msgauth: d=%s: %v", v.Domain, v.Err)
		}
	}

	ar := opendkimVerify(t, data, records)
	for _, alg := range []string{"rsa-sha256", "ed25519-sha256"} {
		if !regexp.MustCompile(`dkim=pass [^;]*header\.d=example\.test[^;]*header\.a=` + alg).MatchString(ar) {
			t.Errorf("opendkim does not pass the %s signature:\n%s\nmessage:\n%s", alg, ar, data)
		}
	}
}

// opendkimVerify verifies msg with a real opendkim (Debian package
// opendkim) and returns what it reports. It runs opendkim's test mode
// (-t), libopendkim's verifier as the milter runs it, with the key records
// given as TestDNSData. opendkim-testmsg (opendkim-tools) verifies with the
// same library but asks the system resolver for keys, with no way to be
// pointed at a test's records.
func opendkimVerify(t *testing.T, msg []byte, records map[string]string) string {
	t.Helper()
	bin := testkit.Need(t, "opendkim", "opendkim")
	dir := t.TempDir()
	var zone strings.Builder
	for name, rec := range records {
		fmt.Fprintf(&zone, "%s %s\n", name, rec)
	}
	files := map[string]string{
		"dns":           zone.String(),
		"msg.eml":       string(msg),
		"opendkim.conf": "Syslog no\nMode v\nTestDNSData file:" + filepath.Join(dir, "dns") + "\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	out, err := exec.Command(bin, "-x", filepath.Join(dir, "opendkim.conf"), "-vv", "-t", filepath.Join(dir, "msg.eml")).CombinedOutput()
	if err != nil {
		t.Fatalf("opendkim -t: %v\n%s", err, out)
	}
	return string(out)
}
