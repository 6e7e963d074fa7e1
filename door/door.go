// Package door is what mailgate's listeners do with a connection before
// the server's protocol reads it, and around it, as Postfix's postscreen
// stands before its smtpd: the PROXY protocol header of a trusted proxy
// (Proxy), the counts of open connections in total and per client
// address (Limits, Listener), the pre-greet test of a client that talks
// before the greeting (Pregreet), the bounds on the time a message may
// take to read (Conn.Reading), the TLS certificate read from files that
// change under a running server (Certs), and the watch for a client that
// hangs up while the server works on its command (WhileConnected). The
// SMTP server and the web console use it; it uses nothing of theirs, and
// the replies it writes are theirs.
package door

import (
	"net"
	"net/netip"

	"github.com/pires/go-proxyproto"
)

// RemoteAddr is the client's address of c: the one a PROXY header named,
// else the peer's; the zero Addr when c is not TCP.
func RemoteAddr(c net.Conn) netip.Addr {
	if ta, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		if a, ok := netip.AddrFromSlice(ta.IP); ok {
			return a.Unmap()
		}
	}
	return netip.Addr{}
}

// TCP is the TCP connection under c, or nil. c may be wrapped in TLS, a
// PROXY header's Conn, or any wrapper with a NetConn method (as
// tls.Conn has) that returns what it wraps.
func TCP(c net.Conn) *net.TCPConn { return find[*net.TCPConn](c) }

// find returns c, or the first connection under it, that is a T.
func find[T net.Conn](c net.Conn) T {
	for c != nil {
		switch x := c.(type) {
		case T:
			return x
		case *proxyproto.Conn:
			c = x.Raw()
		case interface{ NetConn() net.Conn }:
			c = x.NetConn()
		default:
			c = nil
		}
	}
	var none T
	return none
}
