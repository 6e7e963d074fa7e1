package smtpd

import (
	"encoding/binary"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

// proxyV2 builds a PROXY protocol v2 header by hand (HAProxy's spec §2.2):
// the signature, PROXY over TCP4 from src to dst, then the TLVs.
func proxyV2(src, dst netip.AddrPort, tlvs ...[]byte) string {
	var body []byte
	s4, d4 := src.Addr().As4(), dst.Addr().As4()
	body = append(body, s4[:]...)
	body = append(body, d4[:]...)
	body = binary.BigEndian.AppendUint16(body, src.Port())
	body = binary.BigEndian.AppendUint16(body, dst.Port())
	for _, t := range tlvs {
		body = append(body, t...)
	}
	h := []byte("\r\n\r\n\x00\r\nQUIT\n\x21\x11")
	h = binary.BigEndian.AppendUint16(h, uint16(len(body)))
	return string(append(h, body...))
}

// tlv is one type-length-value of a v2 header.
func tlv(typ byte, value []byte) []byte {
	b := binary.BigEndian.AppendUint16([]byte{typ}, uint16(len(value)))
	return append(b, value...)
}

// sslTLV is PP2_TYPE_SSL saying the client spoke TLS to the proxy.
func sslTLV(version, cipher string) []byte {
	v := []byte{0x01, 0, 0, 0, 0} // PP2_CLIENT_SSL, verify = 0
	v = append(v, tlv(0x21, []byte(version))...)
	v = append(v, tlv(0x23, []byte(cipher))...)
	return tlv(0x20, v)
}

// proxyDial connects to ts and writes a header as a proxy does.
func proxyDial(t *testing.T, ts *testServer, header string) *client {
	t.Helper()
	conn, err := net.DialTimeout("tcp", ts.addr.String(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	c := testkit.NewSMTPClient(t, conn)
	c.Send(header)
	return c
}

// closedUnanswered checks that the server closes c without sending a byte.
func closedUnanswered(t *testing.T, c *client) {
	t.Helper()
	c.Conn.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c.Conn)
	if len(b) > 0 || (err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset")) {
		t.Fatalf("got %q, %v; want the connection closed with nothing sent", b, err)
	}
}

const proxyConf = "[server]\nproxy_protocol = true\nproxy_trusted = [\"127.0.0.0/8\"]\ntrusted_networks = [\"127.0.0.1\"]\n"

// TestProxyClientAddress: behind a proxy the client is the address its
// header names, in the Received field and in relay control (the proxy
// is trusted, the client it speaks for is not); v2's SSL TLV is the
// client's TLS. A LOCAL header, or v1's UNKNOWN (a health check), is the
// proxy itself.
func TestProxyClientAddress(t *testing.T) {
	ts := serve(t, proxyConf)
	dst := netip.MustParseAddrPort("192.0.2.1:25")
	for _, tc := range []struct {
		name, header, received string
	}{
		{"v1", "PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n", "from client.test ([203.0.113.7])\r\n\tby "},
		{"v1 IPv6", "PROXY TCP6 2001:db8::7 2001:db8::1 40000 25\r\n", "from client.test ([IPv6:2001:db8::7])\r\n\tby "},
		{"v2", proxyV2(netip.MustParseAddrPort("203.0.113.8:40000"), dst), "from client.test ([203.0.113.8])\r\n\tby "},
		{"v2 TLS", proxyV2(netip.MustParseAddrPort("203.0.113.9:40000"), dst, sslTLV("TLSv1.3", "TLS_AES_256_GCM_SHA384")),
			"from client.test ([203.0.113.9])\r\n\t(using TLS 1.3 with cipher TLS_AES_256_GCM_SHA384)\r\n\tby mx.gateway.test (mailgate) with ESMTPS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := proxyDial(t, ts, tc.header)
			c.Expect("220 ")
			c.Cmd("EHLO client.test", "250")
			c.Cmd("MAIL FROM:<a@sender.test>", "250")
			c.Cmd("RCPT TO:<b@elsewhere.test>", "554 5.7.1") // the proxy may relay, the client may not
			c.Cmd("RCPT TO:<b@dest.test>", "250")
			c.Cmd("DATA", "354")
			c.Send(msg + ".\r\n")
			c.Expect("250")
			envs := ts.queue.queued()
			data, err := os.ReadFile(ts.spool.MessagePath(envs[len(envs)-1].ID))
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(data), tc.received) {
				t.Fatalf("Received field lacks %q:\n%s", tc.received, data)
			}
		})
	}
	for name, header := range map[string]string{"v2 LOCAL": "\r\n\r\n\x00\r\nQUIT\n\x20\x00\x00\x00", "v1 UNKNOWN": "PROXY UNKNOWN\r\n"} {
		t.Run(name, func(t *testing.T) {
			c := proxyDial(t, ts, header)
			c.Expect("220 ")
			c.Cmd("EHLO proxy.test", "250")
			c.Cmd("MAIL FROM:<a@sender.test>", "250")
			c.Cmd("RCPT TO:<b@elsewhere.test>", "250") // the proxy, in trusted_networks
		})
	}
}

// TestProxyRefusals: a connection without a valid header, or from a peer
// that is not a trusted proxy, is closed before the banner: nothing is
// sent and no SMTP command is read.
func TestProxyRefusals(t *testing.T) {
	ts := serve(t, proxyConf)
	for name, header := range map[string]string{
		"missing":       "EHLO client.test\r\n",
		"v1 bad source": "PROXY TCP4 999.0.113.7 192.0.2.1 40000 25\r\nEHLO client.test\r\n",
		"v1 no CRLF":    "PROXY TCP4 203.0.113.7 192.0.2.1 40000 25 " + strings.Repeat("x", 200),
		"v2 truncated":  proxyV2(netip.MustParseAddrPort("203.0.113.8:1"), netip.MustParseAddrPort("192.0.2.1:25"))[:20],
		"v2 bad length": "\r\n\r\n\x00\r\nQUIT\n\x21\x11\x00\x02\x01\x02EHLO client.test\r\n",
		"v2 no address": "\r\n\r\n\x00\r\nQUIT\n\x21\x00\x00\x00EHLO client.test\r\n",
		"v2 version 3":  "\r\n\r\n\x00\r\nQUIT\n\x31\x11\x00\x0c" + strings.Repeat("\x01", 12),
	} {
		t.Run(name, func(t *testing.T) {
			c := proxyDial(t, ts, header)
			if name == "v2 truncated" {
				c.HalfClose()
			}
			closedUnanswered(t, c)
		})
	}
	t.Run("untrusted peer", func(t *testing.T) {
		other := serve(t, "[server]\nproxy_protocol = true\nproxy_trusted = [\"192.0.2.0/24\"]\n")
		closedUnanswered(t, proxyDial(t, other, "PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n"))
	})
}
