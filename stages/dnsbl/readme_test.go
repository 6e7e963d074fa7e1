package dnsbl

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/dnstest"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads the README's example as the gateway does, so the
// documentation cannot drift from the config the code accepts, and runs it
// over a real plugin round trip against a test DNS server.
func TestReadme(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{
		"99.2.0.192.zen.spamhaus.org": {"A 127.0.0.4"},
		"99.2.0.192.bl.spamcop.net":   {"A 127.0.0.2"},
	})
	withServer := func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		return New(env, cfg)
	}
	sts := readmetest.Stages(t, "README.md", "dnsbl", withServer)
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
	for _, st := range sts {
		v, err := st.Filter.Run(context.Background(), stages.Connect, &stages.Transaction{Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.99")}})
		if err != nil {
			t.Fatal(err)
		}
		if v.Action != stages.Reject || v.Score != 13 || v.Reason != "zen.spamhaus.org=127.0.0.4 (XBL); bl.spamcop.net=127.0.0.2" ||
			v.Reply == nil || v.Reply.Text != "Client host 192.0.2.99 blocked using zen.spamhaus.org" {
			t.Errorf("README example: verdict %+v, reply %v", v, v.Reply)
		}
		if _, err := sdktest.Stage(t, New, st.JSON); err != nil {
			t.Fatalf("README example over gRPC: %v", err)
		}
	}
}

// TestPlugin runs the kind out of process as the gateway does.
func TestPlugin(t *testing.T) {
	srv := dnstest.NewServer(t, dnstest.Zone{"99.2.0.192.zen.spamhaus.test": {"A 127.0.0.2"}})
	st, err := sdktest.Stage(t, func(env stages.Env, cfg stages.Config) (stages.Filter, error) {
		env.DNSServers = []string{srv.Addr()}
		return New(env, cfg)
	}, `{"list": [{"zone": "zen.spamhaus.test", "weight": 6, "action": "reject", "labels": {"127.0.0.2": "SBL"}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	v, err := st.Run(ctx, stages.Connect, &stages.Transaction{Client: stages.Client{Addr: netip.MustParseAddr("192.0.2.99")}})
	if err != nil {
		t.Fatal(err)
	}
	if v.Action != stages.Reject || v.Score != 6 || v.Result != "listed" || v.Reason != "zen.spamhaus.test=127.0.0.2 (SBL)" ||
		v.Reply == nil || v.Reply.String() != "550 5.7.1 Client host blocked" {
		t.Errorf("verdict %+v, reply %v", v, v.Reply)
	}
	if _, err := sdktest.Stage(t, New, `{"list": [{"zone": "zen.spamhaus.test", "type": "asn"}]}`); err == nil {
		t.Error("a bad list type was accepted over gRPC")
	}
}
