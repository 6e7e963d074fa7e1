// Package clamdtest starts a real clamd (Debian package clamav-daemon) for a
// test: its own config, socket and signature database in a temporary
// directory, stopped when the test ends. No signature download is possible
// in tests, so the database is one signature the package writes: the EICAR
// test file, which clamd then reports as Signature.
package clamdtest

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages/testkit"
)

// EICAR is the anti-virus test file (https://www.eicar.org): 68 harmless
// bytes every scanner treats as a virus.
const EICAR = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

// Signature is the name clamd reports for EICAR with the test database;
// clamd appends ".UNOFFICIAL" to signatures not from ClamAV's own files.
const Signature = "Eicar-Test-Signature.UNOFFICIAL"

const (
	// startTimeout bounds the wait for clamd to answer PING; loading one
	// signature takes a second or two, more on a loaded machine.
	startTimeout = 60 * time.Second
	// stopTimeout is how long clamd gets to exit after SIGTERM before it
	// is killed.
	stopTimeout = 10 * time.Second
	// attempts bounds the starts tried: the free TCP port a start picks
	// may be taken by someone else before clamd binds it.
	attempts = 3
	// maxSocketPath keeps the socket path within sun_path (108 bytes with
	// the terminating NUL on Linux).
	maxSocketPath = 100
)

// Options change the clamd.conf a test gets. The zero value is clamd's
// defaults.
type Options struct {
	// StreamMaxLength is clamd's limit on the data of one INSTREAM
	// command in bytes; 0 keeps clamd's default of 25 MiB.
	StreamMaxLength int64
}

// Clamd is a running clamd.
type Clamd struct {
	dir     string
	socket  string
	tcpAddr string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has been waited for
	stop    sync.Once
}

// Start starts clamd with default options. See StartWith.
func Start(t testing.TB) *Clamd {
	t.Helper()
	return StartWith(t, Options{})
}

// StartWith starts clamd listening on a Unix socket and on 127.0.0.1 TCP,
// with mail scanning on (ScanMail: MIME parts are decoded and scanned one by
// one) and the EICAR signature, and returns once it answers PING. It stops
// when the test ends.
//
// When clamd is not installed the test fails under CI (environment variable
// CI set) and is skipped elsewhere, naming the package to install.
func StartWith(t testing.TB, o Options) *Clamd {
	t.Helper()
	bin := testkit.Need(t, "clamd", "clamav-daemon")
	dir := t.TempDir()
	sockDir := dir
	if len(filepath.Join(dir, "clamd.sock")) > maxSocketPath {
		d, err := os.MkdirTemp("", "clamd")
		if err != nil {
			t.Fatalf("clamdtest: %v", err)
		}
		t.Cleanup(func() { os.RemoveAll(d) })
		sockDir = d
	}
	db := filepath.Join(dir, "db")
	if err := os.Mkdir(db, 0o755); err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	// An .ndb body signature (name:target:offset:hex; target 0 is any
	// file, offset * is anywhere) finds EICAR wherever it is: the whole
	// message, a decoded MIME part, a file in an archive.
	sig := "Eicar-Test-Signature:0:*:" + hex.EncodeToString([]byte(EICAR)) + "\n"
	if err := os.WriteFile(filepath.Join(db, "test.ndb"), []byte(sig), 0o644); err != nil {
		t.Fatalf("clamdtest: %v", err)
	}
	var lastErr error
	for range attempts {
		c, err := start(bin, dir, sockDir, db, o)
		if err == nil {
			t.Cleanup(c.Stop)
			return c
		}
		lastErr = err
	}
	t.Fatalf("clamdtest: %v", lastErr)
	return nil
}

// Socket returns the path of clamd's Unix socket.
func (c *Clamd) Socket() string { return c.socket }

// TCPAddr returns clamd's TCP address, 127.0.0.1:port.
func (c *Clamd) TCPAddr() string { return c.tcpAddr }

// Stop stops clamd and waits for it to exit. Later calls do nothing.
func (c *Clamd) Stop() {
	c.stop.Do(func() {
		c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(stopTimeout):
			c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

// Log returns what clamd has logged so far, for a test's failure message.
func (c *Clamd) Log() string {
	b, err := os.ReadFile(filepath.Join(c.dir, "clamd.log"))
	if err != nil {
		return fmt.Sprintf("(no clamd log: %v)", err)
	}
	return string(b)
}

// start runs clamd once and waits until it answers PING, or fails with the
// reason and clamd's log.
func start(bin, dir, sockDir, db string, o Options) (*Clamd, error) {
	addr, err := testkit.FreeLoopback()
	if err != nil {
		return nil, err
	}
	c := &Clamd{
		dir:     dir,
		socket:  filepath.Join(sockDir, "clamd.sock"),
		tcpAddr: addr,
		exited:  make(chan struct{}),
	}
	os.Remove(c.socket) // left by an earlier attempt
	os.Remove(filepath.Join(dir, "clamd.log"))
	conf := []string{
		"Foreground yes",
		"LogFile " + filepath.Join(dir, "clamd.log"),
		"LogTime yes",
		"LogVerbose yes",
		"DatabaseDirectory " + db,
		"TemporaryDirectory " + dir,
		"LocalSocket " + c.socket,
		"TCPAddr 127.0.0.1",
		"TCPSocket " + c.tcpAddr[strings.LastIndex(c.tcpAddr, ":")+1:],
		"ScanMail yes",
		// Nothing to verify or run: no bytecode signatures are loaded.
		"Bytecode no",
	}
	if o.StreamMaxLength > 0 {
		conf = append(conf, "StreamMaxLength "+strconv.FormatInt(o.StreamMaxLength, 10))
	}
	confPath := filepath.Join(dir, "clamd.conf")
	if err := os.WriteFile(confPath, []byte(strings.Join(conf, "\n")+"\n"), 0o644); err != nil {
		return nil, fmt.Errorf("write clamd.conf: %w", err)
	}
	var out bytes.Buffer
	c.cmd = exec.Command(bin, "--config-file="+confPath)
	c.cmd.Stdout = &out
	c.cmd.Stderr = &out
	testkit.KillWithParent(c.cmd)
	if err := c.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start clamd: %w", err)
	}
	go func() {
		c.cmd.Wait()
		close(c.exited)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	for {
		if err := ping(ctx, "unix", c.socket); err == nil {
			return c, nil
		}
		select {
		case <-c.exited:
			return nil, fmt.Errorf("clamd exited before answering PING: %s\n%s\n%s", c.cmd.ProcessState, out.String(), c.Log())
		case <-ctx.Done():
			c.Stop()
			return nil, fmt.Errorf("clamd did not answer PING within %s:\n%s\n%s", startTimeout, out.String(), c.Log())
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// ping sends PING to clamd at address on network ("unix" or "tcp") and
// expects PONG.
func ping(ctx context.Context, network, address string) error {
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return err
	}
	defer conn.Close()
	if dl, ok := ctx.Deadline(); ok {
		conn.SetDeadline(dl)
	}
	// The z prefix asks for a NUL-terminated reply (clamd(8), COMMANDS);
	// clamd closes the connection after it.
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return err
	}
	reply, err := io.ReadAll(io.LimitReader(conn, 64))
	if string(reply) != "PONG\x00" {
		return fmt.Errorf("PING: got %q (%v)", reply, err)
	}
	return nil
}
