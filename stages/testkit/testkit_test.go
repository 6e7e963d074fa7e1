package testkit

import (
	"net"
	"strconv"
	"testing"
)

// TestFreeLoopback: the address is on loopback, below the ephemeral
// range, and a daemon can bind it for TCP and UDP.
func TestFreeLoopback(t *testing.T) {
	lo := ephemeralLow()
	for range 20 {
		addr := FreeAddr(t)
		host, p, err := net.SplitHostPort(addr)
		if err != nil || host != "127.0.0.1" {
			t.Fatalf("FreeAddr = %q, not a loopback address (%v)", addr, err)
		}
		if port, _ := strconv.Atoi(p); port >= lo || port < 1024 {
			t.Errorf("FreeAddr = %q: port not in [1024, %d)", addr, lo)
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Fatalf("listen on %s: %v", addr, err)
		}
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			t.Fatalf("UDP on %s: %v", addr, err)
		}
		pc.Close()
		ln.Close()
	}
}
