package dkim

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/internal/dkimcore"
	"github.com/mailgate/mailgate/stages/resolver"
)

// serveDNSFiles serves the records of files in FAKE_DNS.dat form on a
// loopback DNS server: "<name> <TXT value>" a line; NXDOMAIN means no such
// name, ~~text~~ a DNS error (a timeout for "Query timed out", SERVFAIL
// otherwise). Names not listed get NXDOMAIN.
func serveDNSFiles(t testing.TB, files ...string) *dnstest.Server {
	t.Helper()
	srv := dnstest.NewServer(t, nil)
	for _, file := range files {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(data), "\n") {
			line = strings.TrimSpace(line)
			if line == "" || line[0] == '#' || line[0] == ';' {
				continue
			}
			name, value, _ := strings.Cut(line, " ")
			value = strings.TrimSpace(value)
			switch {
			case value == "NXDOMAIN":
			case value == "~~Query timed out~~":
				srv.Set(name, "TIMEOUT")
			case strings.HasPrefix(value, "~~"):
				srv.Set(name, "SERVFAIL")
			default:
				srv.Add(txtRR(name, value))
			}
		}
	}
	return srv
}

// txtRR is a TXT record holding value in 255-octet strings, in miekg/dns's
// presentation form.
func txtRR(name, value string) *dns.TXT {
	rr := &dns.TXT{Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 300}}
	for len(value) > 0 {
		n := min(len(value), 255)
		rr.Txt = append(rr.Txt, strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(value[:n]))
		value = value[n:]
	}
	if rr.Txt == nil {
		rr.Txt = []string{""}
	}
	return rr
}

// newTestVerifier is a verifier asking srv, as New builds it.
func newTestVerifier(t testing.TB, srv *dnstest.Server, r dkimcore.Rules) *verifier {
	t.Helper()
	res, err := resolver.New([]string{srv.Addr()}, 2*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	return &verifier{lookup: dkimcore.ResolverTXT(res), maxSigs: defaultMaxSignatures, rules: r, now: time.Now}
}

// readMessage splits a message file into header and body as the gateway
// does.
func readMessage(t testing.TB, file string) (stages.Header, stages.Body) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return splitMessage(t, data)
}

func splitMessage(t testing.TB, data []byte) (stages.Header, stages.Body) {
	br := bufio.NewReader(bytes.NewReader(data))
	h, err := stages.ParseHeader(br)
	if err != nil {
		t.Fatal(err)
	}
	rest := new(bytes.Buffer)
	rest.ReadFrom(br)
	return h, stages.BytesBody(rest.Bytes())
}

// verifyFile verifies a message file.
func verifyFile(t testing.TB, v *verifier, file string) verification {
	t.Helper()
	h, b := readMessage(t, file)
	ver, err := v.verify(context.Background(), h, b)
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	return ver
}
