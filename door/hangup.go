package door

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// ErrClientGone is why the work for a client that hung up was cancelled.
var ErrClientGone = errors.New("client hung up")

// WhileConnected returns a context that is cancelled, with cause
// ErrClientGone, when the client hangs up: it shuts down its side of the
// connection or resets it. A client that is gone gets no reply, so what
// is done for it (DNS lookups, scans, plugins) is cancelled rather than
// run for nobody.
//
// It watches only while nobody reads the connection: while the server
// works on a command, before its reply. stop ends the watch and must be
// called before the connection is read again; it does not cancel the
// context, and may be called more than once.
func WhileConnected(c net.Conn) (ctx context.Context, stop func()) {
	tc := TCP(c)
	if tc == nil {
		return context.Background(), func() {}
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return context.Background(), func() {}
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	// The watch must last the whole work, not end at the deadline the
	// server set for the command.
	tc.SetReadDeadline(time.Time{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Read waits for the socket to be readable (new bytes, a FIN or
		// a reset) without reading; bytes the client pipelined are left
		// for the server. It returns when the callback says so or when
		// stop sets a deadline in the past.
		rc.Read(func(fd uintptr) bool {
			p := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLRDHUP}}
			n, err := unix.Poll(p, 0)
			if err == nil && n > 0 && p[0].Revents&(unix.POLLRDHUP|unix.POLLHUP|unix.POLLERR) != 0 {
				cancel(ErrClientGone)
				return true
			}
			return false
		})
	}()
	var once sync.Once
	return ctx, func() {
		once.Do(func() {
			tc.SetReadDeadline(time.Unix(1, 0)) // wakes Read; the server sets its own before it reads
			<-done
		})
	}
}

// Gone reports whether ctx was cancelled because the client hung up.
func Gone(ctx context.Context) bool {
	return errors.Is(context.Cause(ctx), ErrClientGone)
}

// Readable reports whether bytes from the client wait to be read on c's
// socket now.
func Readable(c net.Conn) bool {
	tc := TCP(c)
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
