package door

import (
	"errors"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"github.com/pires/go-proxyproto/tlvparse"
)

// ProxyHeaderTimeout bounds the wait for a proxy's PROXY header, as
// Postfix's postscreen_upstream_proxy_timeout.
const ProxyHeaderTimeout = 5 * time.Second

// proxyListener reads the PROXY protocol header (HAProxy's spec, v1 or
// v2) of each connection before the server sees it, so that everything
// after it sees the client's address, not the proxy's.
type proxyListener struct {
	net.Listener
	trusted []netip.Prefix
	timeout time.Duration
	refused func(peer netip.Addr, why string, err error)

	accepted chan acceptResult
	done     chan struct{} // closed by Close
	once     sync.Once

	mu      sync.Mutex
	pending map[net.Conn]struct{} // their header not read yet; closed by Close
}

type acceptResult struct {
	c   net.Conn
	err error
}

// Proxy returns a listener that reads the PROXY header of each
// connection l accepts. As the spec's security model asks, it takes
// connections from the trusted proxies only, and each must open with a
// header: a connection from elsewhere, or without a valid header within
// timeout, is closed with nothing sent and nothing processed, and
// refused is told why, and the error of a header that was not read.
//
// Headers are read in a goroutine per connection, so a proxy that is slow
// to send one holds up nobody else; Accept returns the connections whose
// header was read.
func Proxy(l net.Listener, trusted []netip.Prefix, timeout time.Duration, refused func(peer netip.Addr, why string, err error)) net.Listener {
	p := &proxyListener{Listener: l, trusted: trusted, timeout: timeout, refused: refused,
		accepted: make(chan acceptResult), done: make(chan struct{}), pending: make(map[net.Conn]struct{})}
	go p.acceptLoop()
	return p
}

func (p *proxyListener) acceptLoop() {
	for {
		c, err := p.Listener.Accept()
		if err != nil {
			// The caller sees the error: go-smtp backs off before the
			// next Accept on a temporary one (EMFILE too), and stops on
			// any other; so does this loop.
			select {
			case p.accepted <- acceptResult{err: err}:
			case <-p.done:
				return
			}
			//lint:ignore SA1019 the test go-smtp's Serve makes
			if ne, ok := err.(net.Error); ok && ne.Temporary() {
				continue
			}
			return
		}
		go p.admit(c)
	}
}

// admit reads c's header and hands c to Accept, or closes it.
func (p *proxyListener) admit(raw net.Conn) {
	peer := RemoteAddr(raw)
	if !slices.ContainsFunc(p.trusted, func(n netip.Prefix) bool { return n.Contains(peer) }) {
		p.refused(peer, "not from a proxy in proxy_trusted", nil)
		raw.Close()
		return
	}
	p.mu.Lock()
	select {
	case <-p.done:
		p.mu.Unlock()
		raw.Close()
		return
	default:
	}
	p.pending[raw] = struct{}{}
	p.mu.Unlock()
	c := proxyproto.NewConn(raw, proxyproto.WithPolicy(proxyproto.REQUIRE), proxyproto.SetReadHeaderTimeout(p.timeout))
	// A read of nothing reads the header and returns what went wrong with
	// it: none within the timeout, a malformed one, or none at all.
	_, err := c.Read(nil)
	if err == nil {
		err = checkHeader(c.ProxyHeader())
	}
	p.mu.Lock()
	delete(p.pending, raw)
	p.mu.Unlock()
	if err != nil {
		select {
		case <-p.done: // closed by Close
		default:
			p.refused(peer, "no valid PROXY header", err)
		}
		raw.Close()
		return
	}
	select {
	case p.accepted <- acceptResult{c: c}:
	case <-p.done:
		raw.Close()
	}
}

// checkHeader accepts a header that names the client's TCP address, or a
// LOCAL one (v2 LOCAL, v1 UNKNOWN: the proxy's own connection, a health
// check, served as the proxy's, as the spec says). A v2 PROXY header
// without a TCP source (UNSPEC, a Unix socket) is refused: the client
// would be taken for the proxy, which may be in trusted_networks.
func checkHeader(h *proxyproto.Header) error {
	if h == nil {
		return errors.New("no header")
	}
	if h.Command.IsLocal() {
		return nil
	}
	if _, _, ok := h.TCPAddrs(); !ok {
		return errors.New("the header names no TCP client address")
	}
	return nil
}

func (p *proxyListener) Accept() (net.Conn, error) {
	select {
	case r := <-p.accepted:
		return r.c, r.err
	case <-p.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and closes the connections whose header is still
// awaited.
func (p *proxyListener) Close() error {
	err := p.Listener.Close()
	p.once.Do(func() {
		p.mu.Lock()
		close(p.done)
		for c := range p.pending {
			c.Close()
		}
		p.mu.Unlock()
	})
	return err
}

// ProxiedTLS describes the TLS a PROXY v2 header says the client used
// with the proxy (PP2_TYPE_SSL), as "TLS 1.3 with cipher X"; "" when the
// header says none or c came with no header.
func ProxiedTLS(c net.Conn) string {
	pc := find[*proxyproto.Conn](c)
	if pc == nil || pc.ProxyHeader() == nil {
		return ""
	}
	tlvs, err := pc.ProxyHeader().TLVs()
	if err != nil {
		return ""
	}
	ssl, ok := tlvparse.FindSSL(tlvs)
	if !ok || !ssl.ClientSSL() {
		return ""
	}
	desc := "TLS"
	if v, ok := ssl.SSLVersion(); ok {
		desc = strings.Replace(v, "TLSv", "TLS ", 1) // OpenSSL's "TLSv1.3" as Go's "TLS 1.3"
	}
	if cipher, ok := ssl.SSLCipher(); ok {
		desc += " with cipher " + cipher
	}
	return desc
}
