package door

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// closedUnanswered checks that the server closes c without sending a byte.
func closedUnanswered(t *testing.T, c net.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(time.Minute))
	b, err := io.ReadAll(c)
	if len(b) > 0 || (err != nil && !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "reset")) {
		t.Fatalf("got %q, %v; want the connection closed with nothing sent", b, err)
	}
}

// TestProxyHeaderTimeout: a trusted proxy that sends no header is cut off
// after the header timeout, and a listener closed meanwhile closes the
// connection at once; neither stops the listener.
func TestProxyHeaderTimeout(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := Proxy(inner, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, 100*time.Millisecond, func(netip.Addr, string, error) {})
	defer pl.Close()
	// The timeout runs from the accept, which may come before Dial
	// returns: time from before the dial.
	start := time.Now()
	silent, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	closedUnanswered(t, silent)
	if d := time.Since(start); d < 100*time.Millisecond {
		t.Fatalf("closed after %v, before the timeout", d)
	}
	// The listener still serves the next proxy.
	good, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer good.Close()
	good.Write([]byte("PROXY TCP4 203.0.113.7 192.0.2.1 40000 25\r\n"))
	c, err := pl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	if got := RemoteAddr(c); got != netip.MustParseAddr("203.0.113.7") {
		t.Fatalf("client %v", got)
	}
	c.Close()
}

// TestProxyListenerClose: Close closes the connections whose header is
// awaited, and Accept returns.
func TestProxyListenerClose(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := Proxy(inner, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, time.Hour, func(netip.Addr, string, error) {}).(*proxyListener)
	waiting, err := net.Dial("tcp", inner.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer waiting.Close()
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		pl.mu.Lock()
		n := len(pl.pending)
		pl.mu.Unlock()
		if n == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the connection is not awaiting its header")
		}
	}
	accepted := make(chan error, 1)
	go func() {
		_, err := pl.Accept()
		accepted <- err
	}()
	pl.Close()
	if err := <-accepted; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Accept after Close: %v", err)
	}
	closedUnanswered(t, waiting)
}
