package milter

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/testkit"
)

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
// canonicalizations, and the client's messages share one connection. The
// Subject has no space after its colon: opendkim asks for header values
// as written (SMFIP_HDR_LEADSPC) and must hash the field as it is relayed.
func TestOpenDKIM(t *testing.T) {
	for _, canon := range []string{"simple/simple", "relaxed/relaxed"} {
		t.Run(canon, func(t *testing.T) {
			// The test client is on an internal network relaying out
			// through the gateway: opendkim signs its mail.
			dkimd := testkit.StartOpendkim(t, testkit.OpendkimOptions{Canonicalization: canon, InternalHosts: "192.0.2.0/24"})
			front, conns := proxy(t, dkimd.Addr)

			m := newMilter(t, `{"address": "inet:`+front+`"}`)
			const n = 3
			for i := range n {
				tx := testTx()
				tx.QueueID = fmt.Sprintf("Q%d", i)
				tx.Header[2] = stages.ParseField("Subject:hello")
				v := run(t, m, tx)
				if v.Action != stages.Continue || len(v.Edits) != 1 || v.Edits[0].Name != "DKIM-Signature" {
					t.Fatalf("verdict %+v", v)
				}
				_, msg := applied(t, tx, v)
				if !strings.Contains(msg, "\r\nSubject:hello\r\n") {
					t.Fatalf("the Subject is not relayed as written:\n%s", msg)
				}
				verifs, err := dkim.VerifyWithOptions(strings.NewReader(msg), &dkim.VerifyOptions{LookupTXT: dkimd.LookupTXT})
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
