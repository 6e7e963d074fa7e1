package resolver_test

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/resolver"
)

// TestMailHosts: MX hosts by preference with their addresses (RFC 5321
// §5.1), the domain itself without MX records, an address literal as the
// host, and the failures: null MX (RFC 7505), no such domain, and a
// domain whose hosts cannot be looked up.
func TestMailHosts(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"mx.test":          {"MX 20 backup.mx.test.", "MX 10 mail.mx.test."},
		"mail.mx.test":     {"A 192.0.2.1", "AAAA 2001:db8::1"},
		"backup.mx.test":   {"A 192.0.2.2"},
		"implicit.test":    {"A 192.0.2.3"},
		"null.test":        {"MX 0 ."},
		"noaddr.test":      {"TXT \"no address\""},
		"broken.test":      {"MX 10 fail.broken.test."},
		"fail.broken.test": {"SERVFAIL"},
	})
	r := newResolver(t, 10*time.Second, srv)
	ctx := context.Background()
	for domain, want := range map[string][]resolver.MailHost{
		"mx.test":            {{Name: "mail.mx.test", Addrs: []string{"192.0.2.1", "2001:db8::1"}}, {Name: "backup.mx.test", Addrs: []string{"192.0.2.2"}}},
		"implicit.test":      {{Name: "implicit.test", Addrs: []string{"192.0.2.3"}}},
		"[192.0.2.9]":        {{Name: "192.0.2.9", Addrs: []string{"192.0.2.9"}}},
		"[IPv6:2001:db8::9]": {{Name: "2001:db8::9", Addrs: []string{"2001:db8::9"}}},
	} {
		if got, err := r.MailHosts(ctx, domain); err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("MailHosts(%q) = %v, %v; want %v", domain, got, err, want)
		}
	}
	for domain, want := range map[string]error{
		"null.test":    resolver.ErrNullMX,
		"nowhere.test": resolver.ErrNoDomain,
		"noaddr.test":  resolver.ErrNoDomain,
		"[not.an.ip]":  resolver.ErrNoDomain,
		"":             resolver.ErrNoDomain,
		"broken.test":  resolver.ErrTemporary,
	} {
		if _, err := r.MailHosts(ctx, domain); !errors.Is(err, want) {
			t.Errorf("MailHosts(%q): %v, want %v", domain, err, want)
		}
	}
}
