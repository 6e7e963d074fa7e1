package policy

import (
	"testing"

	"golang.org/x/crypto/bcrypt"
)

// TestPasswordHash: a hash HashPassword makes, and one htpasswd -B makes
// (bcrypt), verify their password and no other.
func TestPasswordHash(t *testing.T) {
	a2, err := HashPassword("correct horse")
	if err != nil {
		t.Fatal(err)
	}
	bc, err := bcrypt.GenerateFromPassword([]byte("correct horse"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, text := range []string{a2, string(bc)} {
		var h PasswordHash
		if err := h.UnmarshalText([]byte(text)); err != nil {
			t.Fatalf("%s: %v", text, err)
		}
		if !h.Verify("correct horse") {
			t.Errorf("%s does not verify its password", text)
		}
		for _, wrong := range []string{"", "correct horsE", "correct horse "} {
			if h.Verify(wrong) {
				t.Errorf("%s verifies %q", text, wrong)
			}
		}
		if h.String() != text {
			t.Errorf("String() = %q, want %q", h.String(), text)
		}
	}
	if (PasswordHash{}).Verify("") {
		t.Error("an unset hash verifies the empty password")
	}
}

// TestWebConfig: a [web] table as an admin writes it loads, with the
// defaults of what it leaves out.
func TestWebConfig(t *testing.T) {
	hash, err := HashPassword("pw")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse("web.toml", []byte(`hostname = "mx.example.test"
data_dir = "/var/lib/mailgate"
[server]
tls_cert = "/etc/mailgate/cert.pem"
tls_key = "/etc/mailgate/key.pem"
[web]
listen = "0.0.0.0:8443"
base_url = "https://console.example.test"
[[web.user]]
name = "alice"
password_hash = "`+hash+`"
[[web.user]]
name = "audit"
password_hash = "`+hash+`"
role = "auditor"
`))
	if err != nil {
		t.Fatal(err)
	}
	w := c.Web
	if w.SessionTTL.String() != "12h0m0s" || w.LinkTTL.String() != "168h0m0s" {
		t.Errorf("ttls %s %s, want the defaults 12h and 168h", w.SessionTTL, w.LinkTTL)
	}
	if w.Users[0].Role != "admin" || w.Users[1].Role != "auditor" {
		t.Errorf("roles %q %q", w.Users[0].Role, w.Users[1].Role)
	}
	if cert, key := c.WebTLS(); cert != "/etc/mailgate/cert.pem" || key != "/etc/mailgate/key.pem" {
		t.Errorf("WebTLS = %s %s, want [server]'s pair", cert, key)
	}
	if !w.Users[0].PasswordHash.Verify("pw") {
		t.Error("the loaded hash does not verify")
	}
}
