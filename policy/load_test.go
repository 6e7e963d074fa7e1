package policy

import (
	"errors"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

var update = flag.Bool("update", false, "rewrite testdata/errors/*.golden from the errors Parse returns, and README.md's config reference from Reference")

// TestErrors parses every testdata/errors/NAME.toml and compares the error
// text, as `mailgate check` prints it, with NAME.golden.
func TestErrors(t *testing.T) {
	files, err := filepath.Glob("testdata/errors/*.toml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 15 {
		t.Fatalf("found %d error cases, want at least 15", len(files))
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".toml")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			c, err := Parse(filepath.Base(file), data)
			if err == nil {
				t.Fatalf("Parse accepted the config: %+v", c)
			}
			var errs Errors
			if !errors.As(err, &errs) {
				t.Fatalf("error is %T, want Errors", err)
			}
			got := err.Error() + "\n"
			golden := strings.TrimSuffix(file, ".toml") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("errors differ from %s\ngot:\n%swant:\n%s", golden, got, want)
			}
		})
	}
}

func TestFullConfig(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	s := c.Server
	tests := []struct {
		name      string
		got, want any
	}{
		{"File", c.File, "testdata/full.toml"},
		{"hostname", c.Hostname, "mx.example.test"},
		{"data_dir", c.DataDir, "/var/lib/mailgate"},
		{"server.listen", s.Listen, []string{"0.0.0.0:25"}},
		{"server.max_message_size", s.MaxMessageSize, stages.Size(50_000_000)},
		{"server.trusted_networks", s.TrustedNetworks, []string{"10.0.0.0/8"}},
		{"server.Trusted()", s.Trusted(), []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}},
		{"server.max_recipients default", s.MaxRecipients, 1000},
		{"server.max_connections default", s.MaxConnections, 2000},
		{"server.max_connections_per_ip default", s.MaxConnectionsPerIP, 50},
		{"server.max_line_length default", s.MaxLineLength, 16384},
		{"server.max_hops default", s.MaxHops, 50},
		{"server.command_timeout default", s.CommandTimeout, stages.Duration(5 * time.Minute)},
		{"server.data_timeout default", s.DataTimeout, stages.Duration(10 * time.Minute)},
		{"server.data_total_timeout default", s.DataTotalTimeout, stages.Duration(time.Hour)},
		{"server.filter_timeout default", s.FilterTimeout, stages.Duration(time.Minute)},
		{"server.bare_lf default", s.BareLF, "normalize"},
		{"dns.servers", c.DNS.Servers, []string{"127.0.0.1:53"}},
		{"dns.timeout default", c.DNS.Timeout, stages.Duration(5 * time.Second)},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:8025"},
		{"delivery.max_age", c.Delivery.MaxAge, stages.Duration(72 * time.Hour)},
		{"delivery.retry_min", c.Delivery.RetryMin, stages.Duration(30 * time.Second)},
		{"delivery.retry_max", c.Delivery.RetryMax, stages.Duration(2 * time.Hour)},
		{"delivery.bounce_from", c.Delivery.BounceFrom, "postmaster@example.test"},
		{"delivery.helo_name default", c.Delivery.HeloName, "mx.example.test"},
		{"delivery.connect_timeout default", c.Delivery.ConnectTimeout, stages.Duration(30 * time.Second)},
		{"delivery.command_timeout default", c.Delivery.CommandTimeout, stages.Duration(5 * time.Minute)},
		{"delivery.idle_conn_timeout default", c.Delivery.IdleConnTimeout, stages.Duration(30 * time.Second)},
		{"delivery.max_connections default", c.Delivery.MaxConnections, 20},
		{"log.level", c.Log.Level, "debug"},
		{"log.format", c.Log.Format, "json"},
		{"routes", len(c.Routes), 1},
		{"route[0].domains", c.Routes[0].Domains, []string{"example.test", "*.example.test"}},
		{"route[0].servers", c.Routes[0].Servers, []string{"10.0.0.5:25", "10.0.0.6:25"}},
		{"route[0].mx", c.Routes[0].MX, false},
		{"route[0].tls default", c.Routes[0].TLS, "opportunistic"},
		{"stages", len(c.Stages), 3},
		{"stage[0].name", c.Stages[0].Name, "spf"},
		{"stage[0].kind", c.Stages[0].Kind, "spf"},
		{"stage[0].on_error", c.Stages[0].OnError, "skip"},
		{"stage[0].timeout", c.Stages[0].Timeout, stages.Duration(5 * time.Second)},
		{"stage[1].name", c.Stages[1].Name, "clamav"},
		{"stage[1].on_error", c.Stages[1].OnError, "tempfail"},
		{"stage[1].timeout default", c.Stages[1].Timeout, stages.Duration(10 * time.Second)},
		{"stage[2].name", c.Stages[2].Name, "dkim-sign"},
		{"stage[2].kind", c.Stages[2].Kind, "milter"},
		{"stage[2].on_error default", c.Stages[2].OnError, "tempfail"},
		{"policy.tag_score", c.Policy.TagScore, 5.0},
		{"policy.quarantine_score", c.Policy.QuarantineScore, 10.0},
		{"policy.reject_score", c.Policy.RejectScore, 15.0},
		{"policy.subject_tag default", c.Policy.SubjectTag, "[SPAM]"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

func TestDefaults(t *testing.T) {
	c, err := Parse("min.toml", []byte("hostname = \"mx.example.test\"\ndata_dir = \"/srv/mailgate\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		got, want any
	}{
		{"server.listen", c.Server.Listen, []string{"127.0.0.1:2525"}},
		{"server.max_message_size", c.Server.MaxMessageSize, stages.Size(50_000_000)},
		{"server.Trusted()", c.Server.Trusted(), []netip.Prefix(nil)},
		{"admin.listen", c.Admin.Listen, "127.0.0.1:8025"},
		{"delivery.max_age", c.Delivery.MaxAge, stages.Duration(120 * time.Hour)},
		{"delivery.retry_min", c.Delivery.RetryMin, stages.Duration(time.Minute)},
		{"delivery.retry_max", c.Delivery.RetryMax, stages.Duration(time.Hour)},
		{"delivery.bounce_from", c.Delivery.BounceFrom, "MAILER-DAEMON@mx.example.test"},
		{"policy.tag_score", c.Policy.TagScore, 5.0},
		{"policy.quarantine_score", c.Policy.QuarantineScore, 10.0},
		{"policy.reject_score", c.Policy.RejectScore, 15.0},
		{"log.level", c.Log.Level, "info"},
		{"log.format", c.Log.Format, "text"},
	}
	for _, tt := range tests {
		if !reflect.DeepEqual(tt.got, tt.want) {
			t.Errorf("%s = %#v, want %#v", tt.name, tt.got, tt.want)
		}
	}
}

// TestRateLimitDefaults: what a [[ratelimit]] that writes only what it
// must gets, and that exempt_trusted = false and exempt entries are kept
// (the entries in canonical form, as [policy.allow]'s).
func TestRateLimitDefaults(t *testing.T) {
	src := `hostname = "mx.example.test"
data_dir = "/d"

[[ratelimit]]
name = "per-net"
key = "client_net"
rate = 100
per = "1h"

[[ratelimit]]
name = "per-sender"
key = "sender"
rate = 10
per = "1m"
burst = 3
count = "recipient"
action = "disconnect"
exempt_trusted = false
[ratelimit.exempt]
senders = ["Boss@Example.TEST."]
`
	c, err := Parse("r.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []RateLimit{
		{Name: "per-net", Key: "client_net", Rate: 100, Per: stages.Duration(time.Hour), Burst: 100, Count: "message",
			Action: "defer", IPv4Prefix: 24, IPv6Prefix: 64, ExemptTrusted: true},
		{Name: "per-sender", Key: "sender", Rate: 10, Per: stages.Duration(time.Minute), Burst: 3, Count: "recipient",
			Action: "disconnect", Exempt: List{Senders: []string{"Boss@example.test"}}},
	}
	if !reflect.DeepEqual(c.RateLimits, want) {
		t.Errorf("ratelimit =\n%+v\nwant\n%+v", c.RateLimits, want)
	}
}

func TestHostnameDefault(t *testing.T) {
	host, err := os.Hostname()
	if err != nil || !address.IsHostname(host) {
		t.Skipf("this machine's name %q cannot serve as the default", host)
	}
	c, err := Parse("min.toml", []byte(`data_dir = "/srv/mailgate"`))
	if err != nil {
		t.Fatal(err)
	}
	if c.Hostname != host || c.Delivery.HeloName != host {
		t.Errorf("hostname %q, helo_name %q; want the machine's name %q", c.Hostname, c.Delivery.HeloName, host)
	}
}

func TestAdminListenOff(t *testing.T) {
	c, err := Parse("a.toml", []byte("hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[admin]\nlisten = \"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.Admin.Listen != "" {
		t.Errorf("admin.listen = %q, want it left empty (off)", c.Admin.Listen)
	}
}

func TestTrusted(t *testing.T) {
	src := "hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[server]\n" +
		`trusted_networks = ["192.0.2.7", "2001:db8::1", "10.1.2.3/8", "2001:db8:1::/48", "::ffff:192.0.2.8"]`
	c, err := Parse("t.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{
		netip.MustParsePrefix("192.0.2.7/32"),
		netip.MustParsePrefix("2001:db8::1/128"),
		netip.MustParsePrefix("10.0.0.0/8"),
		netip.MustParsePrefix("2001:db8:1::/48"),
		netip.MustParsePrefix("192.0.2.8/32"),
	}
	if got := c.Server.Trusted(); !reflect.DeepEqual(got, want) {
		t.Errorf("Trusted() = %v, want %v", got, want)
	}
}

func TestRouteDomainsLowercased(t *testing.T) {
	src := "hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[[route]]\ndomains = [\"Example.TEST\", \"*.Sub.Example.Test\"]\nmx = true\n"
	c, err := Parse("r.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"example.test", "*.sub.example.test"}; !reflect.DeepEqual(c.Routes[0].Domains, want) {
		t.Errorf("domains = %q, want %q", c.Routes[0].Domains, want)
	}
}

// A caller that supplies data_dir itself decodes, sets it and validates.
func TestDecodeThenValidate(t *testing.T) {
	src := []byte("hostname = \"mx.example.test\"\n[server]\nlisten = [\"127.0.0.1:0\"]\n")
	if _, err := Parse("q.toml", src); err == nil || err.Error() != `q.toml: data_dir: required; expect the directory for the spool and quarantine such as "/var/lib/mailgate"` {
		t.Fatalf("Parse error = %v, want data_dir required", err)
	}
	c, err := Decode("q.toml", src)
	if err != nil {
		t.Fatal(err)
	}
	c.DataDir = t.TempDir()
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate after setting data_dir: %v", err)
	}
}

func TestDecodeRefusesBadKeys(t *testing.T) {
	src := []byte("data_dir = \"/d\"\n[server]\nlisen = []\n")
	_, err := Decode("d.toml", src)
	if err == nil || err.Error() != "d.toml:3: server.lisen: unknown key; did you mean listen?" {
		t.Errorf("Decode error = %v", err)
	}
	// A config without a file name, such as an embedded one.
	_, err = Decode("", src)
	if err == nil || err.Error() != "line 3: server.lisen: unknown key; did you mean listen?" {
		t.Errorf("Decode error without a file name = %v", err)
	}
}

const stagesSrc = `hostname = "mx.example.test"
data_dir = "/d"

[[stage]]
name = "spf"
kind = "spf"

[[stage]]
name = "clamav"
kind = "clamav"
[stage.config]
address = "unix:/run/clamav/clamd.ctl"
timeout = "3s"
max_size = 1024
lists = ["a", "b"]
[stage.config.limits]
depth = 3

[[stage]]
name = "typo"
kind = "clamav"
config.adress = "unix:/run/clamav/clamd.ctl"
config.timeout = 5
config.max_size = "big"
config.limits = { depth = 3, width = 2 }
`

// clamConfig is a kind's config struct: json tags name the keys, as the
// plugin process decodes them.
type clamConfig struct {
	Address string          `json:"address"`
	Timeout stages.Duration `json:"timeout"`
	MaxSize int             `json:"max_size"`
	Lists   []string        `json:"lists"`
	Limits  struct {
		Depth int `json:"depth"`
	} `json:"limits"`
}

func TestStageConfig(t *testing.T) {
	c, err := Parse("s.toml", []byte(stagesSrc))
	if err != nil {
		t.Fatal(err)
	}

	var got clamConfig
	if err := c.StageConfig(1).Decode(&got); err != nil {
		t.Fatal(err)
	}
	want := clamConfig{Address: "unix:/run/clamav/clamd.ctl", Timeout: stages.Duration(3 * time.Second), MaxSize: 1024, Lists: []string{"a", "b"}}
	want.Limits.Depth = 3
	if !reflect.DeepEqual(got, want) {
		t.Errorf("stage 1 config = %+v, want %+v", got, want)
	}

	// No [stage.config]: the kind's defaults stay.
	def := clamConfig{Address: "default"}
	if err := c.StageConfig(0).Decode(&def); err != nil || def.Address != "default" {
		t.Errorf("stage 0 without config: %+v, %v", def, err)
	}

	var m map[string]any
	if err := c.StageConfig(1).Decode(&m); err != nil || m["address"] != "unix:/run/clamav/clamd.ctl" || m["max_size"] != float64(1024) {
		t.Errorf("decode into a map: %v, %v", m, err)
	}

	// The first refused key, with its line, as the plugin would refuse it.
	err = c.StageConfig(2).Decode(&clamConfig{})
	if want := `s.toml:22: stage[2].config.adress: unknown key`; err == nil || err.Error() != want {
		t.Errorf("stage 2 error:\n%v\nwant:\n%s", err, want)
	}

	if err := c.StageConfig(1).Decode(clamConfig{}); err == nil {
		t.Error("Decode into a non-pointer succeeded")
	}
}

// Kinds decode their blocks when the pipeline starts, possibly at once.
func TestStageConfigConcurrent(t *testing.T) {
	c, err := Parse("s.toml", []byte(stagesSrc))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			var got clamConfig
			if err := c.StageConfig(1).Decode(&got); err != nil || got.Address == "" {
				t.Errorf("decode: %+v, %v", got, err)
			}
			if _, err := c.StageConfigJSON(1); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
}

func TestStageConfigJSON(t *testing.T) {
	c, err := Parse("s.toml", []byte(stagesSrc))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		stage int
		want  string
	}{
		{0, `{}`},
		{1, `{"address":"unix:/run/clamav/clamd.ctl","limits":{"depth":3},"lists":["a","b"],"max_size":1024,"timeout":"3s"}`},
		{2, `{"adress":"unix:/run/clamav/clamd.ctl","limits":{"depth":3,"width":2},"max_size":"big","timeout":5}`},
	}
	for _, tt := range tests {
		got, err := c.StageConfigJSON(tt.stage)
		if err != nil || string(got) != tt.want {
			t.Errorf("StageConfigJSON(%d) = %s, %v; want %s", tt.stage, got, err, tt.want)
		}
	}

	c, err = Parse("nan.toml", []byte("hostname = \"mx.example.test\"\ndata_dir = \"/d\"\n[[stage]]\nname = \"x\"\nkind = \"x\"\nconfig = { limit = nan }\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.StageConfigJSON(0); err == nil || !strings.HasPrefix(err.Error(), "nan.toml:6: stage[0].config: render as JSON: ") {
		t.Errorf("StageConfigJSON of NaN: %v", err)
	}
}

func TestPosition(t *testing.T) {
	c, err := Load("testdata/full.toml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct{ key, want string }{
		{"hostname", "testdata/full.toml:2"},
		{"server.trusted_networks", "testdata/full.toml:8"},
		{"server.trusted_networks.0", "testdata/full.toml:8"},
		{"route.0.servers.1", "testdata/full.toml:28"},
		{"stage", "testdata/full.toml:30"},
		{"stage.1", "testdata/full.toml:36"},
		{"stage.1.config", "testdata/full.toml:40"},
		{"stage.2.config.address", "testdata/full.toml:47"},
		{"stage.2.config.port", "testdata/full.toml:46"}, // not written: its table
		{"stage.0.timeout", "testdata/full.toml:34"},
		{"nothing.here", "testdata/full.toml"},
	}
	for _, tt := range tests {
		if got := c.Position(tt.key); got != tt.want {
			t.Errorf("Position(%q) = %q, want %q", tt.key, got, tt.want)
		}
	}

	var built Config // put together in Go: no file, no positions
	if got := built.Position("hostname"); got != "" {
		t.Errorf("Position on a Config without a file = %q", got)
	}
	if err := built.StageConfig(0).Decode(&clamConfig{}); err != nil {
		t.Errorf("StageConfig of a Config without a file: %v", err)
	}
}

func TestSuggest(t *testing.T) {
	choices := []string{"listen", "max_message_size", "tls", "tls_cert", "trusted_networks"}
	tests := []struct{ name, want string }{
		{"max_mesage_size", "max_message_size"},
		{"lisen", "listen"},
		{"tsl", "tls"},
		{"TLS_CERT", "tls_cert"},
		{"trusted_network", "trusted_networks"},
		{"tls_crt", "tls_cert"},
		{"colour", ""},
		{"x", ""},
	}
	for _, tt := range tests {
		if got := suggest(tt.name, choices); got != tt.want {
			t.Errorf("suggest(%q) = %q, want %q", tt.name, got, tt.want)
		}
	}
}
