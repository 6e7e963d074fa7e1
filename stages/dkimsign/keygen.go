package dkimsign

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/stages/internal/dkimcore"
)

// GenerateKey makes a private key for algorithm (bits counts for RSA
// only) and returns it with its PKCS #8 PEM encoding, the form ReadKey
// reads.
func GenerateKey(algorithm string, bits int) (crypto.Signer, []byte, error) {
	var k crypto.Signer
	switch algorithm {
	case RSASHA256:
		if bits < dkimcore.MinRSABits || bits > dkimcore.MaxSignRSABits {
			return nil, nil, fmt.Errorf("RSA key of %d bits; expect %d to %d (RFC 8301 §3.2), 2048 recommended", bits, dkimcore.MinRSABits, dkimcore.MaxSignRSABits)
		}
		rk, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			return nil, nil, err
		}
		k = rk
	case Ed25519SHA256:
		_, ek, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		k = ek
	default:
		return nil, nil, fmt.Errorf("algorithm %q; expect %s or %s", algorithm, RSASHA256, Ed25519SHA256)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, nil, err
	}
	return k, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

// KeyRecord is the DKIM key record (RFC 6376 §3.6.1) of a public key: for
// RSA p= is the SubjectPublicKeyInfo, for Ed25519 the raw 32-byte key
// (RFC 8463 §4.2).
func KeyRecord(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(k)
		if err != nil {
			return "", err
		}
		return "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der), nil
	case ed25519.PublicKey:
		return "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(k), nil
	}
	return "", fmt.Errorf("unsupported public key %T", pub)
}

// ZoneLine is the zone-file line that publishes record for selector and
// domain: the owner fully qualified, and the text in quoted strings of at
// most 255 bytes each, the limit of one character-string (RFC 1035
// §3.3.14); verifiers join them (RFC 6376 §3.6.2.2).
func ZoneLine(selector, domain, record string) string {
	var parts []string
	for len(record) > 255 {
		parts = append(parts, `"`+record[:255]+`"`)
		record = record[255:]
	}
	parts = append(parts, `"`+record+`"`)
	return fmt.Sprintf("%s._domainkey.%s. IN TXT %s", selector, domain, strings.Join(parts, " "))
}
