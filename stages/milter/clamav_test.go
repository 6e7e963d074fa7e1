package milter

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/clamdtest"
	"github.com/mailgate/mailgate/stages/testkit"
)

// TestClamavMilter scans through a real clamav-milter and clamd with the
// EICAR test signature: EICAR is refused with the milter's own reply, or
// quarantined with its reason, and a clean message gets its headers.
func TestClamavMilter(t *testing.T) {
	bin := testkit.Need(t, "clamav-milter", "clamav-milter")
	clamd := clamdtest.Start(t)

	tests := []struct {
		onInfected string
		action     stages.Action
		check      func(t *testing.T, v stages.Verdict)
	}{
		{"Reject", stages.Reject, func(t *testing.T, v stages.Verdict) {
			want := "550 5.7.1 Virus found: " + clamdtest.Signature
			if v.Reply == nil || v.Reply.String() != want {
				t.Errorf("reply %v; want %s", v.Reply, want)
			}
		}},
		{"Quarantine", stages.Quarantine, func(t *testing.T, v stages.Verdict) {
			if !strings.Contains(v.Reason, "quarantined by clamav-milter") {
				t.Errorf("reason %q lacks the milter's", v.Reason)
			}
			_, msg := applied(t, testTx(), v)
			if !strings.Contains(msg, "X-Virus-Status: Infected ("+clamdtest.Signature+")\r\n") {
				t.Errorf("quarantined message lacks its status:\n%s", msg)
			}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.onInfected, func(t *testing.T) {
			dir := t.TempDir()
			addr := testkit.FreeAddr(t)
			conf := filepath.Join(dir, "clamav-milter.conf")
			err := os.WriteFile(conf, []byte(strings.Join([]string{
				"MilterSocket inet:" + addr[strings.LastIndex(addr, ":")+1:] + "@127.0.0.1",
				"ClamdSocket unix:" + clamd.Socket(),
				"Foreground yes",
				"LogSyslog no",
				"PidFile " + filepath.Join(dir, "clamav-milter.pid"),
				"TemporaryDirectory " + dir,
				"OnClean Accept",
				"OnInfected " + tt.onInfected,
				"RejectMsg Virus found: %v",
				"AddHeader Replace",
				"",
			}, "\n")), 0o644)
			if err != nil {
				t.Fatal(err)
			}
			testkit.StartDaemon(t, addr, bin, "-c", conf)
			m := newMilter(t, `{"address": "inet:`+addr+`"}`)

			tx := testTx()
			tx.Body = stages.BytesBody(clamdtest.EICAR + "\r\n")
			v := run(t, m, tx)
			if v.Action != tt.action {
				t.Fatalf("EICAR: verdict %+v; want %s", v, tt.action)
			}
			tt.check(t, v)

			v = run(t, m, testTx())
			_, msg := applied(t, testTx(), v)
			if v.Action != stages.Continue || !strings.Contains(msg, "X-Virus-Status: Clean\r\n") {
				t.Errorf("clean message: verdict %+v, message\n%s", v, msg)
			}
		})
	}
}
