package smtpd

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// certPollInterval is how often the certificate files are looked at for a
// change: two stats, cheap enough to notice a renewal within seconds.
const certPollInterval = 10 * time.Second

// certFiles serves tls_cert and tls_key to each TLS handshake, and loads
// them again when they change (an ACME client renewing them: certbot
// replaces the files its live/ symlinks point to) and at a reload. Only
// handshakes after a load see the new certificate; sessions under way
// keep theirs. A pair that does not load (half written, a key that does
// not match) keeps the certificate served, and is logged; it is tried
// again once the files change again.
type certFiles struct {
	log     *slog.Logger
	current atomic.Pointer[tls.Certificate]

	mu        sync.Mutex // one load at a time; guards what follows
	cert, key string
	seen      [2]fileState // of the pair last loaded or tried

	stopOnce sync.Once
	stop     chan struct{}
}

// fileState is what tells a file changed: replaced (another inode), or
// written in place (size, times).
type fileState struct {
	size         int64
	mtime, ctime time.Time
	ino          uint64
}

func stat(name string) fileState {
	fi, err := os.Stat(name) // through symlinks: the file they point to now
	if err != nil {
		return fileState{}
	}
	st := fileState{size: fi.Size(), mtime: fi.ModTime()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino, st.ctime = sys.Ino, time.Unix(sys.Ctim.Unix())
	}
	return st
}

// loadCertFiles loads the pair for the first time: an error here stops
// the start.
func loadCertFiles(cert, key string, log *slog.Logger) (*certFiles, error) {
	c := &certFiles{log: log, cert: cert, key: key, stop: make(chan struct{})}
	c.seen = [2]fileState{stat(cert), stat(key)}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	c.current.Store(&pair)
	return c, nil
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) { return c.current.Load(), nil }

// use loads the pair now, from these files from now on: a reload.
func (c *certFiles) use(cert, key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.cert, c.key = cert, key
	c.load()
}

// poll loads the pair if its files changed since the last look.
func (c *certFiles) poll() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if [2]fileState{stat(c.cert), stat(c.key)} != c.seen {
		c.load()
	}
}

// load loads the pair. Under mu.
func (c *certFiles) load() {
	c.seen = [2]fileState{stat(c.cert), stat(c.key)}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		c.log.Error("TLS certificate not loaded; the one loaded before is served", "tls_cert", c.cert, "tls_key", c.key, "err", err)
		return
	}
	if old := c.current.Load(); len(old.Certificate) > 0 && bytes.Equal(old.Certificate[0], pair.Certificate[0]) {
		return // the same certificate
	}
	c.current.Store(&pair)
	attrs := []any{"tls_cert", c.cert}
	if pair.Leaf != nil {
		attrs = append(attrs, "subject", pair.Leaf.Subject.String(), "not_after", pair.Leaf.NotAfter)
	}
	c.log.Info("TLS certificate loaded", attrs...)
}

// watch polls every interval until close.
func (c *certFiles) watch(interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			c.poll()
		case <-c.stop:
			return
		}
	}
}

func (c *certFiles) close() { c.stopOnce.Do(func() { close(c.stop) }) }
