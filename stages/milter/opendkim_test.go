package milter

import (
	"bytes"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages"
)

// need finds a component the test talks to, on PATH or in /usr/sbin. If it
// is missing the test fails under CI and is skipped elsewhere, naming the
// Debian package either way.
func need(t *testing.T, bin, pkg string) string {
	t.Helper()
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	if p := filepath.Join("/usr/sbin", bin); fileExists(p) {
		return p
	}
	msg := fmt.Sprintf("%s not found: apt-get install %s", bin, pkg)
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return ""
}

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

// freePort returns a loopback port nobody listens on right now.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// startDaemon runs a milter in the foreground until the end of the test
// and waits until it accepts connections on addr.
func startDaemon(t *testing.T, addr string, name string, args ...string) {
	t.Helper()
	cmd := exec.Command(name, args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	setPdeathsig(cmd)
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		if c, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("%s exited: %s", name, out.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s does not listen on %s: %s", name, addr, out.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// proxy forwards 127.0.0.1:0 to target and counts the connections, to
// see how many connections the stage opens to a real milter.
func proxy(t *testing.T, target string) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int32
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n.Add(1)
			up, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, c, up)
			mu.Unlock()
			wg.Go(func() { io.Copy(up, c); up.Close() })
			wg.Go(func() { io.Copy(c, up); c.Close() })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), &n
}

// TestOpenDKIM signs through a real opendkim: the relayed message carries
// a DKIM-Signature that verifies with the test's public key, in both
// canonicalizations, and the client's messages share one connection.
func TestOpenDKIM(t *testing.T) {
	bin := need(t, "opendkim", "opendkim")
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	record := "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(pub)
	lookup := func(domain string) ([]string, error) {
		if domain != "test._domainkey.example.org" {
			return nil, fmt.Errorf("no TXT record for %s", domain)
		}
		return []string{record}, nil
	}

	for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
		t.Run(canon, func(t *testing.T) {
			dir := t.TempDir()
			keyFile := filepath.Join(dir, "test.private")
			pemKey := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(key)})
			// opendkim refuses a key others can read.
			if err := os.WriteFile(keyFile, pemKey, 0o600); err != nil {
				t.Fatal(err)
			}
			addr := fmt.Sprintf("127.0.0.1:%d", freePort(t))
			conf := filepath.Join(dir, "opendkim.conf")
			// The test client is on an internal network relaying out
			// through the gateway: opendkim signs its mail.
			err := os.WriteFile(conf, []byte(strings.Join([]string{
				"Syslog no",
				// RequireSafeKeys also checks every directory up to /,
				// and t.TempDir is under the world-writable /tmp.
				"RequireSafeKeys false",
				"Mode s",
				"InternalHosts 192.0.2.0/24",
				"Domain example.org",
				"Selector test",
				"KeyFile " + keyFile,
				"Canonicalization " + canon,
				"Socket inet:" + addr[strings.LastIndex(addr, ":")+1:] + "@127.0.0.1",
				"PidFile " + filepath.Join(dir, "opendkim.pid"),
				"",
			}, "\n")), 0o600)
			if err != nil {
				t.Fatal(err)
			}
			startDaemon(t, addr, bin, "-f", "-x", conf)
			front, conns := proxy(t, addr)

			m := newMilter(t, `{"address": "inet:`+front+`"}`)
			const n = 3
			for i := range n {
				tx := testTx()
				tx.QueueID = fmt.Sprintf("Q%d", i)
				v := run(t, m, tx)
				if v.Action != stages.Continue || len(v.Edits) != 1 || v.Edits[0].Name != "DKIM-Signature" {
					t.Fatalf("verdict %+v", v)
				}
				_, msg := applied(t, tx, v)
				verifs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: lookup})
				if err != nil {
					t.Fatal(err)
				}
				if len(verifs) != 1 || verifs[0].Err != nil || verifs[0].Domain != "example.org" {
					t.Fatalf("verification %+v of\n%s", verifs[0], msg)
				}
			}
			if got := conns.Load(); got != 1 {
				t.Errorf("%d transactions of one client used %d connections; want 1", n, got)
			}
		})
	}
}
