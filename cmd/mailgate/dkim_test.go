package main

import (
	"crypto/ed25519"
	"crypto/rsa"
	"encoding/base64"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages/dkimsign"
)

// zoneLine is keygen's record line: owner, then the quoted strings.
var zoneLine = regexp.MustCompile(`(?m)^(\S+)\. IN TXT ((?:"[^"]{1,255}" ?)+)$`)

// TestDKIMKeygen: keygen writes a key only its owner reads, which the
// dkim-sign stage loads, and prints the record of its public key split
// into DNS strings; it never overwrites a key.
func TestDKIMKeygen(t *testing.T) {
	for _, c := range []struct {
		algorithm string
		args      []string
		k         string
	}{
		{dkimsign.RSASHA256, nil, "rsa"},
		{dkimsign.RSASHA256, []string{"-bits", "3072", "-algorithm", "rsa-sha256"}, "rsa"},
		{dkimsign.Ed25519SHA256, []string{"-algorithm", "ed25519-sha256"}, "ed25519"},
	} {
		dir := t.TempDir()
		args := append([]string{"dkim", "keygen", "-domain", "Example.Test", "-selector", "mg2026", "-out", dir}, c.args...)
		r := runMailgate(t, args...)
		if r.code != 0 {
			t.Fatalf("%v: exit %d\n%s", args, r.code, r.stderr)
		}
		file := filepath.Join(dir, "example.test.mg2026.key")
		st, err := os.Stat(file)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Fatalf("%v: key file %v, mode %v; want mode 0600", args, err, st.Mode())
		}
		key, err := dkimsign.ReadKey(file, c.algorithm)
		if err != nil {
			t.Fatalf("%v: the stage does not load the key: %v", args, err)
		}
		m := zoneLine.FindStringSubmatch(r.stdout)
		if m == nil || m[1] != "mg2026._domainkey.example.test" {
			t.Fatalf("%v: no record line for mg2026._domainkey.example.test. in\n%s", args, r.stdout)
		}
		var record string
		for _, s := range regexp.MustCompile(`"([^"]*)"`).FindAllStringSubmatch(m[2], -1) {
			record += s[1]
		}
		want, _ := dkimsign.KeyRecord(key.Public())
		if record != want || !strings.HasPrefix(record, "v=DKIM1; k="+c.k+"; p=") {
			t.Errorf("%v: record %q, want %q", args, record, want)
		}
		p, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(want, "v=DKIM1; k="+c.k+"; p="))
		switch k := key.Public().(type) {
		case *rsa.PublicKey:
			if bits := 2048; len(c.args) > 0 {
				bits = 3072
				if k.N.BitLen() != bits {
					t.Errorf("%v: %d bits", args, k.N.BitLen())
				}
			}
		case ed25519.PublicKey:
			if len(p) != ed25519.PublicKeySize {
				t.Errorf("ed25519 p= of %d bytes, want the raw %d (RFC 8463 §4.2)", len(p), ed25519.PublicKeySize)
			}
		}
		if !strings.Contains(r.stdout, file) {
			t.Errorf("output does not name the file %s:\n%s", file, r.stdout)
		}

		before, _ := os.ReadFile(file)
		again := runMailgate(t, args...)
		after, _ := os.ReadFile(file)
		if again.code != 1 || !strings.Contains(again.stderr, "exists") || string(after) != string(before) {
			t.Errorf("second keygen: exit %d, stderr %q; want exit 1, the key kept", again.code, again.stderr)
		}
	}
}

// TestDKIMKeygenRefuses: wrong arguments exit 2 with the reason and the
// usage, and write nothing.
func TestDKIMKeygenRefuses(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-selector", "s"}, "-domain is required"},
		{[]string{"-domain", "example.test"}, `-selector ""`},
		{[]string{"-domain", "exa mple.test", "-selector", "s"}, "not a domain name"},
		{[]string{"-domain", "example.test", "-selector", "s", "-algorithm", "rsa-sha1"}, `-algorithm "rsa-sha1": expect rsa-sha256 or ed25519-sha256`},
		{[]string{"-domain", "example.test", "-selector", "s", "-bits", "512"}, "RSA key of 512 bits; expect 1024 to 4096"},
		{[]string{"-domain", "example.test", "-selector", "s", "-algorithm", "ed25519-sha256", "-bits", "2048"}, "-bits is for rsa-sha256"},
		{[]string{"-domain", "example.test", "-selector", "s", "extra"}, `unexpected argument "extra"`},
	} {
		r := runMailgate(t, append([]string{"dkim", "keygen", "-out", dir}, c.args...)...)
		if r.code != 2 || !strings.Contains(r.stderr, c.want) || !strings.Contains(r.stderr, "usage: mailgate dkim keygen") {
			t.Errorf("%v: exit %d, stderr:\n%s\nwant exit 2 and %q", c.args, r.code, r.stderr, c.want)
		}
	}
	if r := runMailgate(t, "dkim", "rotate"); r.code != 2 || !strings.Contains(r.stderr, "usage: mailgate dkim keygen") {
		t.Errorf("dkim rotate: exit %d, stderr %q", r.code, r.stderr)
	}
	if files, _ := os.ReadDir(dir); len(files) != 0 {
		t.Errorf("refused runs wrote %v", files)
	}
}

// TestCheckDKIMKeys: `mailgate check` starts the dkim-sign stage, which
// loads its keys: a usable key passes; a missing, broken or wrong-type
// key, an unknown algorithm and a missing domain are positioned errors
// that name the key and the file.
func TestCheckDKIMKeys(t *testing.T) {
	dir := t.TempDir()
	if r := runMailgate(t, "dkim", "keygen", "-domain", "example.test", "-selector", "ed", "-algorithm", "ed25519-sha256", "-out", dir); r.code != 0 {
		t.Fatal(r.stderr)
	}
	edKey := filepath.Join(dir, "example.test.ed.key")
	missing := filepath.Join(dir, "example.test.mg2026.key")
	broken := filepath.Join(dir, "broken.key")
	if err := os.WriteFile(broken, []byte("-----BEGIN PRIV"), 0o600); err != nil {
		t.Fatal(err)
	}
	good := writeConfig(t, `
[[stage]]
name = "sign"
kind = "dkim-sign"
[[stage.config.key]]
domain = "example.test"
selector = "ed"
file = "`+edKey+`"
algorithm = "ed25519-sha256"
`)
	if r := runMailgate(t, "check", "-config", good); r.code != 0 {
		t.Fatalf("check of a good key: exit %d\n%s", r.code, r.stderr)
	}
	for _, c := range []struct{ name, key, want string }{
		{"missing", `domain = "example.test"
selector = "mg2026"
file = "` + missing + `"`, ":14: stage[0].config.key: key[0]: file: key mg2026._domainkey.example.test: open " + missing + ": no such file or directory"},
		{"wrong type", `domain = "example.test"
selector = "ed"
file = "` + edKey + `"`, ":14: stage[0].config.key: key[0]: file: key ed._domainkey.example.test: " + edKey + ": holds an Ed25519 key; algorithm rsa-sha256 needs an RSA key"},
		{"broken key", `domain = "example.test"
selector = "mg2026"
file = "` + broken + `"`, ":14: stage[0].config.key: key[0]: file: key mg2026._domainkey.example.test: " + broken + ": no PEM block; expect a PEM private key"},
		{"unknown algorithm", `domain = "example.test"
selector = "ed"
file = "` + edKey + `"
algorithm = "ed448-sha256"`, `:14: stage[0].config.key: key[0]: algorithm: unexpected "ed448-sha256" for domain example.test; expect rsa-sha256 or ed25519-sha256`},
		{"no domain", `selector = "ed"
file = "` + edKey + `"`, `:14: stage[0].config.key: key[0]: domain: missing`},
	} {
		file := writeConfig(t, "\n[[stage]]\nname = \"sign\"\nkind = \"dkim-sign\"\n[[stage.config.key]]\n"+c.key+"\n")
		r := runMailgate(t, "check", "-config", file)
		if r.code != 1 || !strings.Contains(r.stderr, file+c.want) {
			t.Errorf("%s: exit %d, stderr:\n%s\nwant exit 1 and %s%s", c.name, r.code, r.stderr, file, c.want)
		}
	}
}
