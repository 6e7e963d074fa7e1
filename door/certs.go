package door

import (
	"bytes"
	"crypto/tls"
	"log/slog"
	"os"
	"sync"
	"syscall"
	"time"
)

// Certs serves the certificate of a pair of files (tls_cert, tls_key) to
// each TLS handshake. Before each, it looks at the files (two stats: a
// handshake costs far more) and loads the pair again when the config
// names other files (a reload) or they changed on disk: an ACME client
// renewing them (certbot replaces the files its live/ symlinks point
// to). Sessions under way keep the certificate they began with. A pair
// that does not load (half written, a key that does not match) keeps the
// certificate served, and is logged; it is tried again once the files
// change again.
type Certs struct {
	files func() (cert, key string)
	log   *slog.Logger

	mu        sync.Mutex
	cert, key string
	seen      [2]fileState // of the pair last loaded or tried
	pair      *tls.Certificate
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

// LoadCerts loads the pair files names now: an error here stops the
// start. files is asked again before each handshake.
func LoadCerts(files func() (cert, key string), log *slog.Logger) (*Certs, error) {
	c := &Certs{files: files, log: log}
	c.cert, c.key = files()
	c.seen = [2]fileState{stat(c.cert), stat(c.key)}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, err
	}
	c.pair = &pair
	return c, nil
}

// GetCertificate is tls.Config.GetCertificate.
func (c *Certs) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, key := c.files()
	seen := [2]fileState{stat(cert), stat(key)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert == "" || cert == c.cert && key == c.key && seen == c.seen {
		return c.pair, nil
	}
	c.cert, c.key, c.seen = cert, key, seen
	pair, err := tls.LoadX509KeyPair(cert, key)
	switch {
	case err != nil:
		c.log.Error("TLS certificate not loaded; the one loaded before is served", "tls_cert", cert, "tls_key", key, "err", err)
	case !bytes.Equal(c.pair.Certificate[0], pair.Certificate[0]):
		c.pair = &pair
		attrs := []any{"tls_cert", cert}
		if pair.Leaf != nil {
			attrs = append(attrs, "subject", pair.Leaf.Subject.String(), "not_after", pair.Leaf.NotAfter)
		}
		c.log.Info("TLS certificate loaded", attrs...)
	}
	return c.pair, nil
}
