package console

import (
	"crypto/tls"
	"os"
	"sync"
	"syscall"
	"time"
)

// certFiles serves the console's certificate to each handshake, loading
// the files again when the config names others (a reload) or they change
// on disk (a renewal). A pair that does not load keeps the one served
// before. Handshakes are few, so two stats each cost nothing.
type certFiles struct {
	files func() (cert, key string)

	mu        sync.Mutex
	cert, key string
	mod       [2]fileState
	pair      *tls.Certificate
}

// fileState tells a file changed: replaced (another inode, as a renewal
// renames a new file into place) or written in place.
type fileState struct {
	mtime time.Time
	size  int64
	ino   uint64
}

func newCertFiles(files func() (string, string), cert, key string) (*certFiles, error) {
	c := &certFiles{files: files}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return nil, err
	}
	c.cert, c.key, c.mod, c.pair = cert, key, [2]fileState{stat(cert), stat(key)}, &pair
	return c, nil
}

func stat(name string) fileState {
	fi, err := os.Stat(name) // through symlinks: the file they point to now
	if err != nil {
		return fileState{}
	}
	st := fileState{mtime: fi.ModTime(), size: fi.Size()}
	if sys, ok := fi.Sys().(*syscall.Stat_t); ok {
		st.ino = sys.Ino
	}
	return st
}

// get is tls.Config.GetCertificate.
func (c *certFiles) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	cert, key := c.files()
	mod := [2]fileState{stat(cert), stat(key)}
	c.mu.Lock()
	defer c.mu.Unlock()
	if cert == "" || cert == c.cert && key == c.key && mod == c.mod {
		return c.pair, nil
	}
	if pair, err := tls.LoadX509KeyPair(cert, key); err == nil {
		c.pair = &pair
	}
	c.cert, c.key, c.mod = cert, key, mod
	return c.pair, nil
}
