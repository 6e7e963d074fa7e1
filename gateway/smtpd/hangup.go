package smtpd

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/pires/go-proxyproto"
	"golang.org/x/sys/unix"
)

// errClientGone is why the checks of a client that hung up were cancelled.
var errClientGone = errors.New("client hung up")

// whileConnected returns a context that is cancelled, with cause
// errClientGone, when the client hangs up: it shuts down its side of the
// connection or resets it. A client that is gone gets no reply, so its
// stage calls (DNS lookups, scans, plugins) are cancelled rather than run
// for nobody; a cancelled call does not count against a plugin's circuit.
//
// It watches only while nobody reads the connection: during a phase's
// checks, which run before the reply. stop ends the watch and must be
// called before the connection is read again; it does not cancel the
// context, and may be called more than once.
func whileConnected(c net.Conn) (ctx context.Context, stop func()) {
	tc := tcpConn(c)
	if tc == nil {
		return context.Background(), func() {}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return context.Background(), func() {}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	// The watch must last the whole check, not end at the deadline
	// go-smtp set for the command.
	tc.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Read waits for the socket to be readable (new bytes, a FIN or
		// a reset) without reading; bytes the client pipelined are left
		// for go-smtp. It returns when the callback says so or when stop
		// sets a deadline in the past.
		rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			n, err := unix.Poll(p, 0)
			if err == nil && n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				cancel(errClientGone)
				return true
			}
			return false
		})
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			tc.SetReadDeadline(time.Unix(1, 0)) // wakes Read; go-smtp sets its own before it reads
			<-done
		})
	}
}

// tcpConn is the TCP connection under c (TLS, limitedConn, PROXY), or nil.
func tcpConn(c net.Conn) *net.TCPConn {
	for {
		switch x := c.(type) {
		case *net.TCPConn:
			return x
		case *tls.Conn:
			c = x.NetConn()
		case *limitedConn:
			c = x.Conn
		case *proxyproto.Conn:
			c = x.Raw()
		default:
			return nil
		}
	}
}

// gone reports whether ctx was cancelled because the client hung up.
func gone(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), errClientGone)
}

// readable reports whether bytes from the client wait to be read on c's
// socket now.
func readable(c net.Conn) bool {
	tc := tcpConn(c)
	if tc == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return false
	}
	var n int
	rc.Control(func(fd uintptr) {
		// Bytes, not readiness: a client that closed after its command
		// is readable, but sent nothing more.
		n, _ = unix.IoctlGetInt(int(fd), unix.SIOCINQ)
	})
	return n > 0
}
