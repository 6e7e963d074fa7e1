package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/redistest"
	"github.com/mailgate/mailgate/stages/smtptest"
	"github.com/mailgate/mailgate/stages/testkit"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/pgtest"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// clusterConfig is the [cluster] of node name sharing the Redis redis.
func clusterConfig(name, redis string) string {
	return fmt.Sprintf("\n[cluster]\nredis = %q\nnode = %q\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n", redis, name)
}

// TestClusterRateLimitAcrossNodes: a limit of a burst of 4 (then one an
// hour) holds across two gateways sharing Redis: of 8 messages from one
// client sent alternately to both, 4 are taken, whichever node they
// reach, and the rest are deferred at MAIL.
func TestClusterRateLimitAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	down := smtptest.NewServer(t)
	clock := newTestClock()
	conf := routeTo(down, "dest.test") + `
[[ratelimit]]
name = "per-client"
key = "client_ip"
rate = 1
per = "1h"
burst = 4
`
	nodes := []*gateway.Gateway{
		startRateLimited(t, conf+clusterConfig("a", srv.URL()), clock),
		startRateLimited(t, conf+clusterConfig("b", srv.URL()), clock),
	}
	taken := 0
	for i := range 8 {
		c := dial(t, nodes[i%2].SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		switch r := c.TrySend("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("m%d@test", i), "hi\r\n")); {
		case strings.HasPrefix(r, "250"):
			taken++
		case r != rateDeferred:
			t.Fatalf("message %d at node %d: %q", i, i%2, r)
		}
	}
	if taken != 4 {
		t.Fatalf("%d of 8 messages taken by two nodes; want the burst, 4", taken)
	}
	down.WaitFor(4, waitLong)
}

// TestClusterGreylistAcrossNodes: a triplet greylisted at node A passes
// when its retry reaches node B after the delay.
func TestClusterGreylistAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + greylistStage
	a := startGateway(t, conf+clusterConfig("a", srv.URL()))
	b := startGateway(t, conf+clusterConfig("b", srv.URL()))
	msg := message("retried@test", "hi\r\n")
	ca := dial(t, a.SMTPAddrs()[0])
	ca.Cmd("EHLO client.test", "250")
	if r := ca.TrySend("a@sender.test", []string{"b@dest.test"}, msg); r != "451 4.7.1 Greylisted, please try again later" {
		t.Fatalf("first attempt, at A: %q", r)
	}
	cb := dial(t, b.SMTPAddrs()[0])
	cb.Cmd("EHLO client.test", "250")
	waitUntil(t, waitLong, "the retry at B to be accepted", func() bool {
		r := cb.TrySend("a@sender.test", []string{"b@dest.test"}, msg)
		if strings.HasPrefix(r, "451 4.7.1") {
			return false // before the delay: B knows the triplet too
		}
		if !strings.HasPrefix(r, "250") {
			t.Fatalf("retry at B: %q", r)
		}
		return true
	})
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "retried@test" {
		t.Fatal("wrong message delivered")
	}
}

// TestClusterPregreetAcrossNodes: a client that talked before the banner
// at node A is refused at once at node B.
func TestClusterPregreetAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	down := smtptest.NewServer(t)
	conf := "[server]\nlisten = [\"127.0.0.1:0\"]\npregreet_delay = \"200ms\"\n" + routeTo(down, "dest.test")
	a := startGateway(t, conf+clusterConfig("a", srv.URL()))
	b := startGateway(t, conf+clusterConfig("b", srv.URL()))
	conn, err := dialFrom(t, "127.0.0.2", a.SMTPAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	early := testkit.NewSMTPClient(t, conn)
	early.Send("EHLO bot.test\r\n")
	if r := early.Rest(); r != "554 5.7.1 Access denied\r\n" {
		t.Fatalf("early talker at A: %q", r)
	}
	conn.Close()
	conn, err = dialFrom(t, "127.0.0.2", b.SMTPAddrs()[0])
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if r := testkit.NewSMTPClient(t, conn).Rest(); r != "554 5.7.1 Access denied\r\n" {
		t.Fatalf("the same client at B: %q", r)
	}
	if v := scrape(t, b)[`mailgate_smtp_door_refusals_total{reason="pregreet_cached"}`]; v != 1 {
		t.Fatalf("B's pregreet_cached refusals: %v, want 1", v)
	}
}

// TestClusterRedisKilledMidLoad: two nodes take mail from four senders
// while Redis is killed and started again: every message is answered 250
// and delivered once (the limits and greylisting fail open), /healthz
// says Redis is degraded and stays 200, the failures are counted; once
// Redis is back, the limits hold again with no one telling the nodes.
func TestClusterRedisKilledMidLoad(t *testing.T) {
	srv := redistest.Start(t)
	down := smtptest.NewServer(t)
	clock := newTestClock()
	// Each load message has a sender of its own: the rule never refuses
	// one, but counts every one in Redis.
	conf := routeTo(down, "dest.test") + `
[[ratelimit]]
name = "per-sender"
key = "sender"
rate = 1
per = "1h"
burst = 2
`
	nodes := []*gateway.Gateway{
		startRateLimited(t, conf+clusterConfig("a", srv.URL()), clock),
		startRateLimited(t, conf+clusterConfig("b", srv.URL()), clock),
	}
	var acked atomic.Int64
	load := startClusterLoad(t, nodes, func(c *client, w, i int) bool {
		from := fmt.Sprintf("load%d-%d@sender.test", w, i)
		if r := c.SendMail(from, []string{"b@dest.test"}, message(fmt.Sprintf("load%d-%d@test", w, i), "hi\r\n")); !strings.HasPrefix(r, "250") {
			t.Errorf("%s at node %d: %q", from, w%2, r)
			return false
		}
		acked.Add(1)
		return true
	})
	load.awaitMore(20, "with Redis up")
	srv.Kill()
	load.restartCount()
	load.awaitMore(50, "with Redis killed")
	waitUntil(t, waitLong, "/healthz to say Redis is degraded", func() bool {
		code, body := httpGet(t, "http://"+nodes[0].AdminAddr().String()+"/healthz")
		if code != 200 {
			t.Fatalf("/healthz %d with Redis down; want 200 (degraded, mail flows):\n%s", code, body)
		}
		return strings.Contains(body, "\nredis: degraded: unreachable")
	})
	m := scrape(t, nodes[0])
	if m["mailgate_cluster_redis_up"] != 0 || m["mailgate_cluster_redis_failures_total"] == 0 || m[`mailgate_ratelimit_store_faults_total{fault="store"}`] == 0 {
		t.Errorf("with Redis down: redis_up %v, redis_failures_total %v, ratelimit store faults %v; want 0, >0, >0",
			m["mailgate_cluster_redis_up"], m["mailgate_cluster_redis_failures_total"], m[`mailgate_ratelimit_store_faults_total{fault="store"}`])
	}
	srv.Restart()
	for _, g := range nodes {
		waitUntil(t, waitLong, "/healthz to say Redis is reachable", func() bool {
			_, body := httpGet(t, "http://"+g.AdminAddr().String()+"/healthz")
			return strings.Contains(body, "\nredis: ok: reachable")
		})
	}
	load.awaitMore(20, "after Redis came back")
	load.stop()

	// The limits hold again, across the nodes: a sender's burst of 2.
	var replies []string
	for i := range 3 {
		c := dial(t, nodes[i%2].SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		replies = append(replies, c.TrySend("limited@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("limited%d@test", i), "hi\r\n")))
	}
	if !strings.HasPrefix(replies[0], "250") || !strings.HasPrefix(replies[1], "250") || replies[2] != rateDeferred {
		t.Fatalf("after Redis came back, one sender's 3 messages: %q; want 250, 250, %q", replies, rateDeferred)
	}

	// Nothing acknowledged is lost, nothing is delivered twice.
	for _, g := range nodes {
		waitQueueEmpty(t, g)
	}
	want := int(acked.Load()) + 2
	seen := map[string]int{}
	for _, msg := range down.Messages() {
		seen[messageID(msg.Data)]++
	}
	if len(down.Messages()) != want || len(seen) != want {
		t.Fatalf("%d deliveries of %d messages; want each of the %d acknowledged once", len(down.Messages()), len(seen), want)
	}
}

// pgConfig is the [cluster] of node name sharing the PostgreSQL
// database url (and Redis redis, if not "").
func pgConfig(name, url, redis string) string {
	c := fmt.Sprintf("\n[cluster]\npostgres = %q\nnode = %q\ntimeout = \"2s\"\nconnect_timeout = \"1s\"\n", url, name)
	if redis != "" {
		c += fmt.Sprintf("redis = %q\n", redis)
	}
	return c
}

// clusterCLI runs mailgate cluster ARGS with a config of the cluster's
// PostgreSQL, as an operator on another machine would.
func clusterCLI(t *testing.T, url string, args ...string) string {
	t.Helper()
	conf := filepath.Join(t.TempDir(), "cli.toml")
	body := fmt.Sprintf("hostname = \"ops.test\"\ndata_dir = %q\n", t.TempDir()) + pgConfig("ops", url, "")
	if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(mailgateBin, append(append([]string{"cluster"}, args...), "-config", conf)...).CombinedOutput()
	if err != nil {
		t.Fatalf("mailgate cluster %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// TestClusterStatus: three nodes register themselves in PostgreSQL;
// `mailgate cluster status` lists them with their version, config and
// health, and flags the one whose config differs from the other two's
// (node-local keys, such as the listeners and data_dir, differ in all
// three and do not count). A node that shuts down says so.
func TestClusterStatus(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + "\n[[ratelimit]]\nname = \"per-client\"\nkey = \"client_ip\"\nrate = 100\nper = \"1h\"\n"
	startGateway(t, conf+pgConfig("a", url, ""))
	startGateway(t, conf+pgConfig("b", url, ""))
	c := startGateway(t, strings.Replace(conf, "rate = 100", "rate = 50", 1)+pgConfig("c", url, ""))

	var nodes []state.Node
	waitUntil(t, waitClusterStart, "three nodes to report ok", func() bool {
		nodes = nil
		if err := json.Unmarshal([]byte(clusterCLI(t, url, "status", "-json")), &nodes); err != nil {
			t.Fatal(err)
		}
		ok := 0
		for _, n := range nodes {
			if n.Health == "ok" {
				ok++
			}
		}
		return ok == 3
	})
	for _, n := range nodes {
		if n.Stale || n.ConfigDiffers != (n.Name == "c") || n.Version == "" || len(n.ConfigHash) != 64 {
			t.Errorf("node %+v; want live, version and hash set, config differing for c only", n)
		}
	}
	out := clusterCLI(t, url, "status")
	for _, want := range []string{"NODE", "config differs", "3 nodes, 0 stale"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c.Shutdown(ctx)
	if out := clusterCLI(t, url, "status"); !regexp.MustCompile(`(?m)^c .* stopped `).MatchString(out) {
		t.Errorf("a node shut down does not say stopped:\n%s", out)
	}
}

// TestClusterPostgresDown: a node starts while PostgreSQL is down (it
// takes mail, /healthz says postgres is degraded and stays 200), joins
// the registry when PostgreSQL comes up, says degraded again when it is
// killed, and recovers by itself when it is back.
func TestClusterPostgresDown(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	pg.Stop()
	down := smtptest.NewServer(t)
	g := startGateway(t, routeTo(down, "dest.test")+pgConfig("a", url, ""))
	health := func(want string) {
		t.Helper()
		waitUntil(t, waitLong, "/healthz to say "+want, func() bool {
			code, body := httpGet(t, "http://"+g.AdminAddr().String()+"/healthz")
			if code != 200 {
				t.Fatalf("/healthz %d; want 200, PostgreSQL stops no mail:\n%s", code, body)
			}
			return strings.Contains(body, "\n"+want)
		})
	}
	health("postgres: degraded: unreachable")
	cl := dial(t, g.SMTPAddrs()[0])
	cl.Cmd("EHLO client.test", "250")
	if r := cl.SendMail("a@sender.test", []string{"b@dest.test"}, message("nopg@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("with PostgreSQL down: %q", r)
	}

	pg.Restart()
	health("postgres: ok: reachable")
	waitUntil(t, waitLong, "the node to register", func() bool {
		return strings.Contains(clusterCLI(t, url, "status"), "1 nodes, 0 stale")
	})
	if v := scrape(t, g)["mailgate_cluster_postgres_up"]; v != 1 {
		t.Errorf("mailgate_cluster_postgres_up %v with PostgreSQL up", v)
	}

	pg.Kill()
	health("postgres: degraded: unreachable")
	if v := scrape(t, g)["mailgate_cluster_postgres_up"]; v != 0 {
		t.Errorf("mailgate_cluster_postgres_up %v with PostgreSQL killed", v)
	}
	pg.Restart()
	health("postgres: ok: reachable")
}

// holdAll quarantines every message: the test plugin's verdict at each
// phase.
func holdAll() string {
	return pluginStage("holdall", testPluginBin, "", "", `action = "quarantine"`)
}

// TestClusterQuarantineAcrossNodes: a message quarantined on node A is
// listed, shown and released from node B with the same commands as on
// one node; A and B releasing it at the same moment make one copy,
// delivered once; `mailgate trace` on B tells its whole story, A's part
// included.
func TestClusterQuarantineAcrossNodes(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + holdAll()
	a := startFromFile(t, conf+pgConfig("a", url, ""))
	b := startFromFile(t, conf+pgConfig("b", url, ""))
	c := dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message("held@test", "suspicious\r\n")))

	if list := b.must("quarantine", "list", "-stage", "holdall"); !strings.Contains(list, id) {
		t.Fatalf("quarantine list on B lacks %s:\n%s", id, list)
	}
	if msg := b.must("quarantine", "show", "-message", id); !strings.Contains(msg, "Message-ID: <held@test>") {
		t.Fatalf("quarantine show -message on B:\n%s", msg)
	}

	var (
		wg   sync.WaitGroup
		outs [2]string
		oks  [2]bool
	)
	for i, n := range []*fileGateway{a, b} {
		wg.Go(func() { outs[i], oks[i] = n.mailgate("quarantine", "release", id) })
	}
	wg.Wait()
	if oks[0] == oks[1] {
		t.Fatalf("two releases at once: A ok=%v %q, B ok=%v %q; want one to go through", oks[0], outs[0], oks[1], outs[1])
	}
	for i := range 2 {
		if !oks[i] && !strings.Contains(outs[i], "already released") && !strings.Contains(outs[i], "release in progress") {
			t.Errorf("the refused release said %q", outs[i])
		}
	}
	if msgs := down.WaitFor(1, waitLong); messageID(msgs[0].Data) != "held@test" {
		t.Fatal("wrong message delivered")
	}
	waitQueueEmpty(t, a.Gateway)
	waitQueueEmpty(t, b.Gateway)
	if n := len(down.Messages()); n != 1 {
		t.Fatalf("%d deliveries; want 1", n)
	}
	waitUntil(t, waitLong, "B's trace to tell the whole story", func() bool {
		out, _ := b.mailgate("trace", id)
		return strings.Contains(out, " connect ") && strings.Contains(out, "action=quarantine") &&
			strings.Contains(out, "released") && strings.Contains(out, "action=relayed")
	})
}

// TestClusterReleaseSomeRecipientsAcrossNodes: a message to bob and
// carol held on node A is released to bob from node B and to carol from
// A; downstream each gets exactly one copy, and a third release of either
// is refused on both nodes.
func TestClusterReleaseSomeRecipientsAcrossNodes(t *testing.T) {
	url := pgtest.Start(t).NewDatabase(t)
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + holdAll()
	a := startFromFile(t, conf+pgConfig("a", url, ""))
	b := startFromFile(t, conf+pgConfig("b", url, ""))
	c := dial(t, a.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"bob@dest.test", "carol@dest.test"}, message("two@test", "held\r\n")))

	b.must("quarantine", "release", "-rcpt", "bob@dest.test", id)
	a.must("quarantine", "release", "-rcpt", "carol@dest.test", id)
	for _, n := range []*fileGateway{a, b} {
		for _, rcpt := range []string{"bob@dest.test", "carol@dest.test"} {
			if out, ok := n.mailgate("quarantine", "release", "-rcpt", rcpt, id); ok || !strings.Contains(out, "already released") {
				t.Errorf("a second release to %s: ok=%v %q; want it refused as already released", rcpt, ok, out)
			}
		}
	}
	down.WaitFor(2, waitLong)
	waitQueueEmpty(t, a.Gateway)
	waitQueueEmpty(t, b.Gateway)
	got := map[string]int{}
	for _, m := range down.Messages() {
		if messageID(m.Data) != "two@test" {
			t.Errorf("delivered %q; want the held message", messageID(m.Data))
		}
		for _, r := range m.Rcpts {
			got[r]++
		}
	}
	if len(got) != 2 || got["bob@dest.test"] != 1 || got["carol@dest.test"] != 1 {
		t.Fatalf("copies downstream per recipient: %v; want one for bob and one for carol", got)
	}
}

// TestClusterPostgresStoppedMidLoad: two nodes quarantine every message
// of a steady load while PostgreSQL is stopped and started again. Every
// message answered 250 ends in the cluster's quarantine, once, and its
// trace in the cluster's traces: what came while PostgreSQL was away was
// kept on the nodes' disks and moved, and the traces buffered in their
// files and shipped, with no operator action.
func TestClusterPostgresStoppedMidLoad(t *testing.T) {
	pg := pgtest.Start(t)
	url := pg.NewDatabase(t)
	down := smtptest.NewServer(t)
	conf := routeTo(down, "dest.test") + holdAll()
	dirs := []string{t.TempDir(), t.TempDir()}
	var nodes []*gateway.Gateway
	for i, name := range []string{"a", "b"} {
		nodes = append(nodes, startGatewayIn(t, dirs[i], conf+pgConfig(name, url, ""), gateway.Options{Logger: testLogger(t)}))
	}

	var (
		mu    sync.Mutex
		acked []string
	)
	load := startClusterLoad(t, nodes, func(c *client, w, i int) bool {
		r := c.SendMail("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("q%d-%d@test", w, i), "hi\r\n"))
		id, ok := strings.CutPrefix(r, "250 2.0.0 Ok: queued as ")
		if !ok {
			t.Errorf("worker %d message %d: %q", w, i, r)
			return false
		}
		mu.Lock()
		acked = append(acked, id)
		mu.Unlock()
		return true
	})
	load.awaitMore(10, "with PostgreSQL up")
	pg.Stop()
	// Wait for one more message a worker than the 20 counted, for the one
	// each may have had in flight across the stop (it may have reached
	// PostgreSQL before it went).
	load.restartCount()
	load.awaitMore(20+clusterLoadWorkers, "with PostgreSQL stopped")
	spilled := 0
	for _, dir := range dirs {
		left, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*.json"))
		spilled += len(left)
	}
	if spilled < 20 {
		t.Errorf("%d messages kept on the nodes' disks with PostgreSQL stopped; want the 20 or more taken meanwhile", spilled)
	}
	pg.Restart()
	load.awaitMore(10, "after PostgreSQL came back")
	load.stop()

	st, err := sqlstore.OpenPostgres(context.Background(), url, sqlstore.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	waitUntil(t, 2*waitLong, "every acknowledged message in the cluster's quarantine", func() bool {
		recs, err := st.Quarantine().List(ctx, state.QuarantineFilter{})
		if err != nil {
			t.Fatal(err)
		}
		held := map[string]int{}
		for _, r := range recs {
			held[r.ID]++
		}
		for _, id := range acked {
			if held[id] != 1 {
				return false
			}
		}
		if len(recs) != len(acked) {
			t.Fatalf("%d messages quarantined of %d acknowledged", len(recs), len(acked))
		}
		return true
	})
	waitUntil(t, 2*waitLong, "every acknowledged message's trace in the cluster's traces", func() bool {
		for _, id := range acked {
			evs, err := st.Traces().Find(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			decided := 0
			for _, e := range evs {
				if e.Event == "data" && e.Action == "quarantine" {
					decided++
				}
			}
			if decided != 1 {
				return false
			}
		}
		return true
	})
	for _, dir := range dirs {
		if left, _ := filepath.Glob(filepath.Join(dir, "quarantine", "*.json")); len(left) != 0 {
			t.Errorf("%d messages left on a node's disk", len(left))
		}
	}
	if n := len(down.Messages()); n != 0 {
		t.Errorf("%d quarantined messages delivered", n)
	}
}

// waitClusterStart bounds the wait for three nodes to start and report
// ok: each starts its plugins and joins PostgreSQL and Redis, and under
// make test's load with the race detector that took over 30 s once. An
// upper bound only: the tests go on as soon as the nodes report.
const waitClusterStart = 2 * time.Minute

// TestClusterExample: examples/cluster runs as its README says, in two
// commands (cluster.sh engines, cluster.sh nodes), here on free ports
// and in a temporary directory: three nodes that agree on their config
// register, take mail, and share the quarantine.
func TestClusterExample(t *testing.T) {
	names := []string{"mx1", "mx2", "mx3"}
	var hash string
	for _, n := range names {
		cfg, err := policy.Load(filepath.Join("../examples/cluster", n+".toml"))
		if err != nil {
			t.Fatal(err)
		}
		if hash != "" && cfg.Hash() != hash {
			t.Fatalf("examples/cluster/%s.toml differs from mx1.toml in more than its own keys", n)
		}
		hash = cfg.Hash()
	}
	testkit.Need(t, "redis-server", "redis-server")
	if _, err := exec.LookPath("pg_ctl"); err != nil {
		if found, _ := filepath.Glob("/usr/lib/postgresql/*/bin/pg_ctl"); len(found) == 0 {
			testkit.Need(t, "pg_ctl", "postgresql") // fails or skips, naming the package
		}
	}
	// Not t.TempDir: as root, PostgreSQL runs as another user, who must
	// reach its directory.
	run, err := os.MkdirTemp("", "mgcluster")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(run, 0o755)
	t.Cleanup(func() { os.RemoveAll(run) })
	port := func() string { a := testkit.FreeAddr(t); return a[strings.LastIndex(a, ":")+1:] }
	redisPort, pgPort := port(), port()
	configs := t.TempDir()
	smtp, web := map[string]string{}, map[string]string{}
	for i, n := range names {
		b, err := os.ReadFile(filepath.Join("../examples/cluster", n+".toml"))
		if err != nil {
			t.Fatal(err)
		}
		smtp[n], web[n] = testkit.FreeAddr(t), testkit.FreeAddr(t)
		conf := strings.NewReplacer(
			"127.0.0.1:15432", "127.0.0.1:"+pgPort, "127.0.0.1:16379", "127.0.0.1:"+redisPort,
			"/tmp/mailgate-cluster", run,
			fmt.Sprintf("127.0.0.1:260%d", i+1), smtp[n], fmt.Sprintf("127.0.0.1:860%d", i+1), testkit.FreeAddr(t),
			fmt.Sprintf("127.0.0.1:870%d", i+1), web[n],
		).Replace(string(b))
		if err := os.WriteFile(filepath.Join(configs, n+".toml"), []byte(conf), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	script := func(cmd string) error {
		c := exec.Command("../examples/cluster/cluster.sh", cmd)
		c.Env = append(os.Environ(), "RUN="+run, "REDIS_PORT="+redisPort, "PG_PORT="+pgPort, "CONFIGS="+configs, "MAILGATE="+mailgateBin)
		if out, err := c.CombinedOutput(); err != nil {
			return fmt.Errorf("cluster.sh %s: %v\n%s", cmd, err, out)
		}
		return nil
	}
	t.Cleanup(func() {
		if err := script("stop"); err != nil {
			t.Error(err)
		}
	})
	// On failure, what the nodes said: the log is where an admin looks.
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		for _, n := range names {
			b, _ := os.ReadFile(filepath.Join(run, n+".log"))
			t.Logf("%s.log:\n%s", n, b)
		}
	})
	for _, cmd := range []string{"engines", "nodes"} {
		if err := script(cmd); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(mailgateBin, args...).CombinedOutput()
		return string(out), err
	}
	var status string // the last answer, logged if the nodes never agree
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("last cluster status:\n%s", status)
		}
	})
	waitUntil(t, waitClusterStart, "three nodes to report ok with one config", func() bool {
		for _, n := range names { // a node that exited will not report
			b, _ := os.ReadFile(filepath.Join(run, n+".pid"))
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err != nil || syscall.Kill(pid, 0) != nil {
				t.Fatalf("node %s is not running (pid file %q)", n, b)
			}
		}
		out, err := cli("cluster", "status", "-json", "-config", filepath.Join(configs, "mx1.toml"))
		status = out
		if err != nil {
			return false // PostgreSQL may still be starting
		}
		var nodes []state.Node
		if err := json.Unmarshal([]byte(out), &nodes); err != nil {
			t.Fatalf("%v:\n%s", err, out)
		}
		ok := 0
		for _, n := range nodes {
			if n.Health == "ok" && !n.ConfigDiffers {
				ok++
			}
		}
		return ok == 3
	})

	c := testkit.DialSMTP(t, smtp["mx2"])
	c.Cmd("EHLO client.test", "250")
	if r := c.SendMail("a@sender.test", []string{"b@example.test"}, message("plain@test", "hi\r\n")); !strings.HasPrefix(r, "250") {
		t.Fatalf("plain message at mx2: %q", r)
	}
	c = testkit.DialSMTP(t, smtp["mx1"])
	c.Cmd("EHLO client.test", "250")
	id := queuedAs(t, c.SendMail("a@sender.test", []string{"b@example.test"}, "Subject: quarantine me\r\nMessage-ID: <held@test>\r\n\r\nhi\r\n"))
	mx3 := filepath.Join(configs, "mx3.toml")
	if out, err := cli("quarantine", "list", "-config", mx3); err != nil || !strings.Contains(out, id) {
		t.Fatalf("quarantine list at mx3 (%v):\n%s", err, out)
	}
	// mx2's console, as the README says: the message mx1 held, the nodes.
	w := webLogin(t, "http://"+web["mx2"], "cluster-example")
	if _, page := w.get("/quarantine"); !strings.Contains(page, id) {
		t.Errorf("mx2's console does not list %s, held at mx1:\n%s", id, page)
	}
	if _, page := w.get("/nodes"); strings.Count(page, `<span class="badge ok">live</span>`) != 3 {
		t.Errorf("mx2's Nodes page does not list three live nodes:\n%s", page)
	}
	if out, err := cli("quarantine", "release", "-config", mx3, id); err != nil {
		t.Fatalf("quarantine release at mx3 (%v):\n%s", err, out)
	}
	waitUntil(t, waitLong, "both messages in the Maildir", func() bool {
		got, _ := filepath.Glob(filepath.Join(run, "maildir", "new", "*"))
		return len(got) == 2
	})
}

// TestClusterImport: a single node's quarantine (a message held, one
// released) and traces are copied into the cluster's PostgreSQL by
// `mailgate cluster import` while the node runs, with their release
// state; a second run copies nothing twice.
func TestClusterImport(t *testing.T) {
	down := smtptest.NewServer(t)
	body := routeTo(down, "dest.test") + holdAll()
	fg := startFromFile(t, body)
	var ids []string
	for i := range 2 {
		c := dial(t, fg.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		ids = append(ids, queuedAs(t, c.SendMail("a@sender.test", []string{"b@dest.test"}, message(fmt.Sprintf("imp%d@test", i), "hi\r\n"))))
	}
	out := fg.must("quarantine", "release", ids[1])
	copyID := regexp.MustCompile(`queued as (\S+)`).FindStringSubmatch(out)[1]
	down.WaitFor(1, waitLong)
	waitQueueEmpty(t, fg.Gateway)

	url := pgtest.Start(t).NewDatabase(t)
	conf := filepath.Join(t.TempDir(), "import.toml")
	if err := os.WriteFile(conf, []byte(gatewayConfig(fg.dir, "", body+pgConfig("single", url, ""))), 0o644); err != nil {
		t.Fatal(err)
	}
	imp := func() string {
		t.Helper()
		out, err := exec.Command(mailgateBin, "cluster", "import", "-config", conf).CombinedOutput()
		if err != nil {
			t.Fatalf("mailgate cluster import: %v\n%s", err, out)
		}
		return string(out)
	}
	st, err := sqlstore.OpenPostgres(context.Background(), url, sqlstore.Options{Node: "test"})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	ctx := context.Background()
	traced := func() int {
		evs, err := st.Traces().Find(ctx, ids[1])
		if err != nil {
			t.Fatal(err)
		}
		return len(evs)
	}

	if out := imp(); !strings.Contains(out, "quarantine: 2 messages copied, 0 there already") || !strings.Contains(out, "traces: ") {
		t.Fatalf("first import:\n%s", out)
	}
	events := traced()
	if events < 4 { // connect, rcpt, data, released, the copy's queued and attempt
		t.Fatalf("%d events of %s in PostgreSQL after the import", events, ids[1])
	}
	if out := imp(); !strings.Contains(out, "quarantine: 0 messages copied, 2 there already") {
		t.Fatalf("second import:\n%s", out)
	}
	if n := traced(); n != events {
		t.Fatalf("%d events after a second import; want %d, each once", n, events)
	}
	rec, err := st.Quarantine().Get(ctx, ids[1])
	if err != nil || rec.Released != copyID {
		t.Fatalf("released message in PostgreSQL: %+v, %v; want released as %s", rec, err, copyID)
	}
	if rec, err := st.Quarantine().Get(ctx, ids[0]); err != nil || rec.Released != "" || rec.Node != "single" {
		t.Fatalf("held message in PostgreSQL: %+v, %v; want it held, from node single", rec, err)
	}
	// The node's own files are as they were: the import only reads.
	if left, _ := filepath.Glob(filepath.Join(fg.dir, "quarantine", "*.json")); len(left) != 2 {
		t.Fatalf("%d records left on the node's disk; want both", len(left))
	}
}

// TestClusterNodeKilled: three `mailgate serve` processes share Redis
// (a rate limit counts every message there) and PostgreSQL (traces,
// heartbeats); one is killed with SIGKILL in the middle of a load sent to
// all three and started again on its data dir. Every message any node
// answered 250 is delivered (the spool is each node's own), and the other
// nodes take mail throughout.
func TestClusterNodeKilled(t *testing.T) {
	srv := redistest.Start(t)
	url := pgtest.Start(t).NewDatabase(t)
	down := smtptest.NewServer(t)
	var confs []string
	var procs []*process
	for _, name := range []string{"a", "b", "c"} {
		conf := writeConfig(t, tempDir(t), down)
		f, err := os.OpenFile(conf, os.O_APPEND|os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(f, "\n[[ratelimit]]\nname = \"per-client\"\nkey = \"client_ip\"\nrate = 1000000\nper = \"1s\"\nexempt_trusted = false\n%s", pgConfig(name, url, srv.URL()))
		f.Close()
		confs = append(confs, conf)
		procs = append(procs, startProcess(t, conf))
	}
	var (
		mu    sync.Mutex
		acked = map[string]bool{}
		addrs = []string{procs[0].addr, procs[1].addr, procs[2].addr}
		stop  = make(chan struct{})
		wg    sync.WaitGroup
	)
	for w := range 6 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				mu.Lock()
				addr := addrs[w%3]
				mu.Unlock()
				id := fmt.Sprintf("w%d-%d@kill.test", w, i)
				if !sendOne(addr, id) {
					time.Sleep(50 * time.Millisecond) // c is down: pace, do not spin
					continue
				}
				mu.Lock()
				acked[id] = true
				mu.Unlock()
			}
		})
	}
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	waitUntil(t, 60*time.Second, "mail to be taken before the kill", func() bool { return count() >= 60 })
	procs[2].kill9(t)
	n := count()
	waitUntil(t, 60*time.Second, "the other nodes to take mail with c killed", func() bool { return count() >= n+60 })
	restarted := startProcess(t, confs[2])
	mu.Lock()
	addrs[2] = restarted.addr
	mu.Unlock()
	n = count()
	waitUntil(t, 60*time.Second, "mail to be taken by all three again", func() bool { return count() >= n+60 })
	close(stop)
	wg.Wait()

	mu.Lock()
	defer mu.Unlock()
	waitUntil(t, 60*time.Second, "every acknowledged message to arrive", func() bool {
		got := map[string]bool{}
		for _, m := range down.Messages() {
			got[messageID(m.Data)] = true
		}
		for id := range acked {
			if !got[id] {
				return false
			}
		}
		return true
	})
	t.Logf("%d acknowledged by three nodes, one killed with SIGKILL; %d deliveries", len(acked), len(down.Messages()))
}

// TestClusterVerifyRcptsAcrossNodes: the answers of verify_rcpts probes
// are shared through Redis: a recipient node A asked the internal server
// about (one refused, one taken) is answered at node B without asking
// again, the refusal with the server's code. With Redis killed, B asks
// the server itself: mail never waits for the cache.
func TestClusterVerifyRcptsAcrossNodes(t *testing.T) {
	srv := redistest.Start(t)
	down := smtptest.NewServer(t)
	down.SetRcptReply("nobody@dest.test", 550)
	conf := fmt.Sprintf("\n[[route]]\ndomains = [\"dest.test\"]\nservers = [%q]\nverify_rcpts = true\n", down.Addr())
	a := startGateway(t, conf+clusterConfig("a", srv.URL()))
	b := startGateway(t, conf+clusterConfig("b", srv.URL()))
	for _, g := range []*gateway.Gateway{a, b} {
		c := dial(t, g.SMTPAddrs()[0])
		c.Cmd("EHLO client.test", "250")
		c.Cmd("MAIL FROM:<a@sender.test>", "250")
		c.Cmd("RCPT TO:<nobody@dest.test>", "550 5.1.1 ")
		c.Cmd("RCPT TO:<b@dest.test>", "250")
		c.Cmd("QUIT", "221")
	}
	probes := func(rcpt string) int {
		n := 0
		for _, w := range down.Transcripts() {
			n += strings.Count(w, "RCPT TO:<"+rcpt+">")
		}
		return n
	}
	if n, m := probes("nobody@dest.test"), probes("b@dest.test"); n != 1 || m != 1 {
		t.Fatalf("two nodes asked about nobody %d times and b %d times; want once each", n, m)
	}
	srv.Kill()
	c := dial(t, b.SMTPAddrs()[0])
	c.Cmd("EHLO client.test", "250")
	c.Cmd("MAIL FROM:<a@sender.test>", "250")
	c.Cmd("RCPT TO:<carol@dest.test>", "250")
	c.Cmd("RCPT TO:<nobody@dest.test>", "550 5.1.1 ")
	c.Cmd("QUIT", "221")
	if n := probes("carol@dest.test"); n != 1 {
		t.Fatalf("with Redis killed, carol asked %d times; want once, by B itself", n)
	}
}

// clusterLoadWorkers is how many SMTP clients a clusterLoad runs.
const clusterLoadWorkers = 4

// clusterLoad is a steady load on the nodes of a cluster for its fault
// tests: clusterLoadWorkers clients, each on one node in turn, sending
// one message after another with send until it fails or stop is called.
type clusterLoad struct {
	t        *testing.T
	halt     atomic.Bool
	wg       sync.WaitGroup
	progress chan struct{} // a token a message taken
}

func startClusterLoad(t *testing.T, nodes []*gateway.Gateway, send func(c *client, worker, i int) bool) *clusterLoad {
	l := &clusterLoad{t: t, progress: make(chan struct{}, 1000)}
	for w := range clusterLoadWorkers {
		l.wg.Go(func() {
			c := dial(t, nodes[w%len(nodes)].SMTPAddrs()[0])
			c.Cmd("EHLO client.test", "250")
			for i := 0; !l.halt.Load(); i++ {
				if !send(c, w, i) {
					return
				}
				select {
				case l.progress <- struct{}{}:
				default:
				}
			}
		})
	}
	t.Cleanup(l.stop)
	return l
}

// awaitMore waits until n more messages were taken.
func (l *clusterLoad) awaitMore(n int, what string) {
	l.t.Helper()
	for range n {
		select {
		case <-l.progress:
		case <-time.After(waitLong):
			l.t.Fatalf("no mail taken for %v %s", waitLong, what)
		}
	}
}

// restartCount forgets the messages taken so far, which the clients ran
// ahead of awaitMore with, so that the next awaitMore counts only what
// was taken from now on (after a fault, say).
func (l *clusterLoad) restartCount() {
	for len(l.progress) > 0 {
		<-l.progress
	}
}

// stop ends the load and waits for the clients; it may be called again.
func (l *clusterLoad) stop() {
	l.halt.Store(true)
	l.wg.Wait()
}
