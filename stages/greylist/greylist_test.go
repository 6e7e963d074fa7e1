package greylist

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/recstore"
	"github.com/mailgate/mailgate/stages/testkit"
)

// clock is the test clock: it moves only when told.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)} }

func (c *clock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// fixture is a greylist filter on a data directory with a test clock.
type fixture struct {
	t     *testing.T
	dir   string
	clock *clock
	log   *testkit.SyncBuffer
	f     *Filter
}

func newFixture(t *testing.T, config string) *fixture {
	t.Helper()
	fx := &fixture{t: t, dir: t.TempDir(), clock: newClock(), log: &testkit.SyncBuffer{}}
	fx.f = fx.open(config)
	return fx
}

// open builds a filter on the fixture's directory and clock: a second
// call is a restart, or a second process.
func (fx *fixture) open(config string) *Filter {
	fx.t.Helper()
	if config == "" {
		config = "{}"
	}
	f, err := newFilter(stages.Env{DataDir: fx.dir}, stages.JSONConfig([]byte(config)), fx.clock.now, slog.New(slog.NewTextHandler(fx.log, nil)))
	if err != nil {
		fx.t.Fatal(err)
	}
	return f
}

// tx is a transaction at RCPT from a client that is neither trusted nor
// authenticated.
func tx(ip, from, rcpt string) *stages.Transaction {
	return &stages.Transaction{
		Client: stages.Client{Addr: netip.MustParseAddr(ip), Helo: "client.test"},
		From:   from,
		Rcpts:  []string{"first@dest.test", rcpt},
	}
}

// run runs f on tx and checks the verdict has the result want, with the
// refusal's action and reply exactly when want is greylisted.
func run(t *testing.T, f *Filter, tr *stages.Transaction, want string) stages.Verdict {
	t.Helper()
	v, err := f.Run(context.Background(), stages.Rcpt, tr)
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if v.Result != want {
		t.Fatalf("result %q (%s); want %q", v.Result, v.Reason, want)
	}
	if want == Greylisted {
		if v.Action != stages.TempFail || v.Reply == nil || v.Reply.String() != "451 4.7.1 Greylisted, please try again later" {
			t.Fatalf("greylisted with action %v, reply %v", v.Action, v.Reply)
		}
	} else if v.Action != stages.Continue || v.Reply != nil {
		t.Fatalf("%s with action %v, reply %v", want, v.Action, v.Reply)
	}
	if v.Reason == "" {
		t.Fatal("no reason")
	}
	return v
}

func TestRefusedThenAcceptedAfterDelay(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0}`)
	m := tx("192.0.2.10", "alice@sender.test", "bob@dest.test")
	run(t, fx.f, m, Greylisted)
	fx.clock.add(4*time.Minute + 59*time.Second)
	if v := run(t, fx.f, m, Greylisted); !strings.Contains(v.Reason, "before delay") {
		t.Errorf("reason %q", v.Reason)
	}
	fx.clock.add(time.Second)
	run(t, fx.f, m, Passed)
	run(t, fx.f, m, Passed)

	// Another recipient, sender or network is another triplet.
	run(t, fx.f, tx("192.0.2.10", "alice@sender.test", "carol@dest.test"), Greylisted)
	run(t, fx.f, tx("192.0.2.10", "mallory@sender.test", "bob@dest.test"), Greylisted)
	run(t, fx.f, tx("198.51.100.10", "alice@sender.test", "bob@dest.test"), Greylisted)
	// The same /24, the same spelling of the addresses as canonical
	// addresses compare, and a BATV tag: the same triplet.
	run(t, fx.f, tx("192.0.2.200", "Alice@Sender.TEST", "BOB@dest.test"), Passed)
	run(t, fx.f, tx("::ffff:192.0.2.1", "prvs=0123abcdef=alice@sender.test", "bob@dest.test"), Passed)

	// The triplets survive a restart.
	run(t, fx.open(`{"auto_allow": 0}`), m, Passed)
}

func TestNetworks(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0, "ipv4_prefix": 32, "ipv6_prefix": 48}`)
	run(t, fx.f, tx("2001:db8:1:2::1", "a@sender.test", "b@dest.test"), Greylisted)
	fx.clock.add(5 * time.Minute)
	run(t, fx.f, tx("2001:db8:1:ffff::9", "a@sender.test", "b@dest.test"), Passed) // same /48
	run(t, fx.f, tx("2001:db8:2::1", "a@sender.test", "b@dest.test"), Greylisted)
	run(t, fx.f, tx("192.0.2.1", "a@sender.test", "b@dest.test"), Greylisted)
	fx.clock.add(5 * time.Minute)
	run(t, fx.f, tx("192.0.2.2", "a@sender.test", "b@dest.test"), Greylisted) // /32: another network
	run(t, fx.f, tx("192.0.2.1", "a@sender.test", "b@dest.test"), Passed)
}

func TestRetryWindow(t *testing.T) {
	fx := newFixture(t, `{"delay": "10m", "retry_window": "1h"}`)
	m := tx("192.0.2.10", "", "postmaster@dest.test") // the null sender is greylisted too
	run(t, fx.f, m, Greylisted)
	fx.clock.add(time.Hour + time.Second)
	run(t, fx.f, m, Greylisted)
	// The round started over at the late retry.
	fx.clock.add(9 * time.Minute)
	run(t, fx.f, m, Greylisted)
	fx.clock.add(time.Minute)
	run(t, fx.f, m, Passed)
}

func TestExpiryRefreshedOnUse(t *testing.T) {
	fx := newFixture(t, `{"expiry": "240h", "auto_allow": 0}`)
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	run(t, fx.f, m, Greylisted)
	fx.clock.add(5 * time.Minute)
	run(t, fx.f, m, Passed)
	for range 3 { // 27 days in all, each use within the 10 days
		fx.clock.add(9 * 24 * time.Hour)
		run(t, fx.f, m, Passed)
	}
	fx.clock.add(10*24*time.Hour + time.Second)
	run(t, fx.f, m, Greylisted)
}

func TestClockJumps(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0}`)
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	run(t, fx.f, m, Greylisted)
	// Back an hour: the triplet's first attempt is now in the future. It
	// does not pass early...
	fx.clock.add(-time.Hour)
	if v := run(t, fx.f, m, Greylisted); !strings.Contains(v.Reason, "clock went back") {
		t.Errorf("reason %q", v.Reason)
	}
	fx.clock.add(4 * time.Minute)
	run(t, fx.f, m, Greylisted)
	// ...and is not locked out until the clock catches up: its round
	// started over at the first retry after the jump.
	fx.clock.add(time.Minute)
	run(t, fx.f, m, Passed)

	// A passed triplet stays passed when the clock goes back, and its
	// expiry counts from the earlier time.
	fx.clock.add(-24 * time.Hour)
	run(t, fx.f, m, Passed)
	fx.clock.add(36*24*time.Hour - time.Second)
	run(t, fx.f, m, Passed)

	// Forward past the window: a retry starts over, as a late one would.
	n := tx("192.0.2.10", "c@sender.test", "b@dest.test")
	run(t, fx.f, n, Greylisted)
	fx.clock.add(365 * 24 * time.Hour)
	run(t, fx.f, n, Greylisted)
	fx.clock.add(5 * time.Minute)
	run(t, fx.f, n, Passed)
}

func TestAutoAllow(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 2}`)
	for _, rcpt := range []string{"b1@dest.test", "b2@dest.test"} {
		run(t, fx.f, tx("192.0.2.10", "a@sender.test", rcpt), Greylisted)
		fx.clock.add(5 * time.Minute)
		run(t, fx.f, tx("192.0.2.10", "a@sender.test", rcpt), Passed)
	}
	// The same pass again does not count twice; but two did: the network
	// is allowed, for any triplet, from any address in it.
	if v := run(t, fx.f, tx("192.0.2.99", "new@other.test", "b3@dest.test"), Allowed); !strings.Contains(v.Reason, "auto-allowed") {
		t.Errorf("reason %q", v.Reason)
	}
	run(t, fx.f, tx("192.0.3.10", "new@other.test", "b3@dest.test"), Greylisted)

	// One pass short, or auto_allow off: still greylisted.
	fx2 := newFixture(t, `{"auto_allow": 3}`)
	fx3 := newFixture(t, `{"auto_allow": 0}`)
	for _, fx := range []*fixture{fx2, fx3} {
		for _, rcpt := range []string{"b1@dest.test", "b2@dest.test"} {
			run(t, fx.f, tx("192.0.2.10", "a@sender.test", rcpt), Greylisted)
			fx.clock.add(5 * time.Minute)
			run(t, fx.f, tx("192.0.2.10", "a@sender.test", rcpt), Passed)
			run(t, fx.f, tx("192.0.2.10", "a@sender.test", rcpt), Passed)
		}
		run(t, fx.f, tx("192.0.2.99", "new@other.test", "b3@dest.test"), Greylisted)
	}
}

func TestSkipped(t *testing.T) {
	fx := newFixture(t, `{
		"allow_networks": ["198.51.100.0/24", "2001:db8::1"],
		"allow_senders": ["Boss@Partner.test"],
		"allow_recipients": ["postmaster@dest.test"],
		"allow_sender_domains": ["*.bank.test"],
		"allow_recipient_domains": ["open.test"]
	}`)
	spf := func(result string, errored bool) *stages.Transaction {
		m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
		m.Results = []stages.Result{{Stage: "spf", Kind: "spf", Result: result, Errored: errored}}
		return m
	}
	trusted := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	trusted.Client.Trusted = true
	auth := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	auth.Client.AuthUser = "a"
	for _, tc := range []struct {
		name string
		tx   *stages.Transaction
		want string
	}{
		{"trusted", trusted, Skipped},
		{"authenticated", auth, Skipped},
		{"spf pass", spf("pass", false), Skipped},
		{"spf softfail", spf("softfail", false), Greylisted},
		{"allow_networks", tx("198.51.100.7", "a@sender.test", "b@dest.test"), Allowed},
		{"allow_networks address", tx("2001:db8::1", "a@sender.test", "b@dest.test"), Allowed},
		{"allow_networks other address", tx("2001:db8::2", "a@sender.test", "c@dest.test"), Greylisted},
		{"allow_senders", tx("192.0.2.10", "boss@partner.test", "b@dest.test"), Allowed},
		{"allow_recipients", tx("192.0.2.10", "x@sender.test", "Postmaster@DEST.test"), Allowed},
		{"allow_sender_domains", tx("192.0.2.10", "x@mail.bank.test", "b@dest.test"), Allowed},
		{"allow_sender_domains not the parent", tx("192.0.2.10", "x@bank.test", "b@dest.test"), Greylisted},
		{"allow_recipient_domains", tx("192.0.2.10", "x@sender.test", "y@open.test"), Allowed},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, fx.f, tc.tx, tc.want) })
	}
	// skip_spf_pass = false greylists an SPF pass like any other.
	run(t, newFixture(t, `{"skip_spf_pass": false}`).f, spf("pass", false), Greylisted)
}

func TestConfigErrors(t *testing.T) {
	for conf, want := range map[string]string{
		`{"delay": "0s"}`:                       "delay: unexpected 0s",
		`{"delay": "5m", "retry_window": "5m"}`: "retry_window: unexpected 5m0s; expect more than delay",
		`{"auto_allow": -1}`:                    "auto_allow: unexpected -1",
		`{"ipv4_prefix": 33}`:                   "ipv4_prefix: unexpected 33; expect 8 to 32",
		`{"ipv6_prefix": 8}`:                    "ipv6_prefix: unexpected 8; expect 16 to 128",
		`{"max_entries": 10}`:                   "max_entries: unexpected 10",
		`{"allow_networks": ["10.0.0.0/33"]}`:   `allow_networks: [0]: unexpected "10.0.0.0/33"`,
		`{"allow_senders": ["nobody"]}`:         `allow_senders: [0]: unexpected "nobody"`,
		`{"allow_sender_domains": ["a..b"]}`:    `allow_sender_domains: [0]: unexpected "a..b"`,
		`{"delay_typo": "5m"}`:                  "delay_typo",
	} {
		_, err := newFilter(stages.Env{DataDir: t.TempDir()}, stages.JSONConfig([]byte(conf)), time.Now, slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v; want %q", conf, err, want)
		}
	}
	if _, err := New(stages.Env{}, stages.JSONConfig([]byte("{}"))); err == nil || !strings.Contains(err.Error(), "data_dir") {
		t.Errorf("no data dir: %v", err)
	}
}

// failOpen checks a verdict of a store that fails: unavailable, continue,
// logged.
func failOpen(t *testing.T, fx *fixture, m *stages.Transaction, wantErr string) {
	t.Helper()
	v := run(t, fx.f, m, Unavailable)
	if !strings.Contains(v.Reason, wantErr) {
		t.Errorf("reason %q; want %q", v.Reason, wantErr)
	}
	if !strings.Contains(fx.log.String(), "fail open") {
		t.Errorf("not logged:\n%s", fx.log)
	}
}

func TestDiskFullFailsOpen(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0}`)
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	// The triplet's bucket is /dev/full: reads find nothing, every write
	// fails with ENOSPC, as on a full disk.
	st := fx.f.store.(*recstore.File)
	bucket := st.Path(tripletKey("192.0.2.0/24", "a@sender.test", "b@dest.test"))
	if err := os.Symlink("/dev/full", bucket); err != nil {
		t.Fatal(err)
	}
	failOpen(t, fx, m, syscall.ENOSPC.Error())
	for range 100 {
		run(t, fx.f, m, Unavailable)
	}
	// Counted, and logged once rather than 101 times.
	if n := fx.f.alarms.total("store"); n != 101 {
		t.Errorf("%d faults counted; want 101", n)
	}
	if n := strings.Count(fx.log.String(), "fail open"); n != 1 {
		t.Errorf("logged %d times:\n%s", n, fx.log)
	}
	// Room again: greylisting resumes.
	os.Remove(bucket)
	run(t, fx.f, m, Greylisted)
}

func TestUnwritableStoreFailsOpen(t *testing.T) {
	// The store's directory cannot be created (a file is in the way):
	// the stage starts, mail passes, and greylisting starts once the
	// directory can be made.
	dataDir := t.TempDir()
	blocker := filepath.Join(dataDir, storeDir)
	if err := os.WriteFile(blocker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	fx := &fixture{t: t, dir: dataDir, clock: newClock(), log: &testkit.SyncBuffer{}}
	fx.f = fx.open("")
	if !strings.Contains(fx.log.String(), "store not usable") {
		t.Errorf("start not logged:\n%s", fx.log)
	}
	m := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	failOpen(t, fx, m, "not a directory")
	os.Remove(blocker)
	run(t, fx.f, m, Greylisted)
	if b, err := os.ReadFile(filepath.Join(blocker, "format")); err != nil || string(b) != "mailgate greylist store 1\n" {
		t.Errorf("format file %q, %v", b, err)
	}
}

func TestCorruptStore(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0}`)
	passed := tx("192.0.2.10", "a@sender.test", "b@dest.test")
	victim := tx("192.0.2.10", "v@sender.test", "b@dest.test")
	for _, m := range []*stages.Transaction{passed, victim} {
		run(t, fx.f, m, Greylisted)
	}
	fx.clock.add(5 * time.Minute)
	for _, m := range []*stages.Transaction{passed, victim} {
		run(t, fx.f, m, Passed)
	}
	st := fx.f.store.(*recstore.File)
	// Flip a byte of the victim's record (its key is at bytes 8-23 of
	// its 64), and append half a record of garbage to the other's bucket:
	// a crash mid-write, a bad disk.
	vk := tripletKey("192.0.2.0/24", "v@sender.test", "b@dest.test")
	vf := st.Path(vk)
	b, err := os.ReadFile(vf)
	if err != nil {
		t.Fatal(err)
	}
	i := bytes.Index(b, vk[:])
	if i < 8 || (i-8)%64 != 0 {
		t.Fatalf("record of the victim not found in %s", vf)
	}
	b[i-8+30] ^= 0xff
	if err := os.WriteFile(vf, b, 0o600); err != nil {
		t.Fatal(err)
	}
	pf := st.Path(tripletKey("192.0.2.0/24", "a@sender.test", "b@dest.test"))
	f, err := os.OpenFile(pf, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(make([]byte, 32))
	f.Write([]byte("garbage"))
	f.Close()

	// A restart: the good record is kept, the bad one dropped (its
	// triplet starts over), and the drop is logged.
	g := fx.open(`{"auto_allow": 0}`)
	run(t, g, passed, Passed)
	run(t, g, victim, Greylisted)
	if !strings.Contains(fx.log.String(), "corrupt records dropped") {
		t.Errorf("not logged:\n%s", fx.log)
	}

	// A format file of another version is refused with what to do.
	os.WriteFile(filepath.Join(fx.dir, storeDir, "format"), []byte("mailgate greylist store 9\n"), 0o600)
	_, err = newFilter(stages.Env{DataDir: fx.dir}, stages.JSONConfig([]byte("{}")), fx.clock.now, slog.New(slog.DiscardHandler))
	if err == nil || !errors.Is(err, recstore.ErrFormat) || !strings.Contains(err.Error(), "move the directory away") ||
		!strings.Contains(err.Error(), filepath.Join(fx.dir, storeDir, "format")) {
		t.Errorf("other format: %v", err)
	}
}

// TestFloodBounded sends 10,000 new triplets a minute for three minutes
// of test time, into a store of 8192 records: the files stay within that bound,
// and a triplet passed before the flood is still passed after it (the
// flood's unpassed triplets expire first, so they make room first).
func TestFloodBounded(t *testing.T) {
	if testing.Short() {
		t.Skip("writes 30,000 records")
	}
	fx := newFixture(t, `{"auto_allow": 0, "max_entries": 8192}`)
	good := tx("198.51.100.1", "friend@sender.test", "b@dest.test")
	run(t, fx.f, good, Greylisted)
	fx.clock.add(5 * time.Minute)
	run(t, fx.f, good, Passed)
	ctx := context.Background()
	m := tx("192.0.2.1", "", "b@dest.test")
	for minute := range 3 {
		for i := range 10000 {
			m.From = "bot" + itoa(minute*10000+i) + "@spam.test"
			if _, err := fx.f.Run(ctx, stages.Rcpt, m); err != nil {
				t.Fatal(err)
			}
		}
		fx.clock.add(time.Minute)
	}
	var size int64
	filepath.Walk(filepath.Join(fx.dir, storeDir), func(_ string, fi os.FileInfo, _ error) error {
		if fi != nil && !fi.IsDir() {
			size += fi.Size()
		}
		return nil
	})
	if limit := int64(8192*64 + len("mailgate greylist store 1\n")); size > limit {
		t.Errorf("store is %d bytes; want at most %d", size, limit)
	}
	run(t, fx.f, good, Passed)
	if !strings.Contains(fx.log.String(), "store full") {
		t.Errorf("eviction not logged:\n%s", fx.log)
	}
}

func itoa(n int) string {
	var b [20]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + n%10)
		if n /= 10; n == 0 {
			return string(b[i:])
		}
	}
}

// TestTwoWriters has two filters on one directory write at once, as the
// old and the new plugin process do across a reload, all into one bucket
// file. flock belongs to the open file, so two opens in one process
// exclude each other as two processes do: every record written by either
// is read back by the other, none overwritten by a record written to the
// same free slot at the same time.
func TestTwoWriters(t *testing.T) {
	fx := newFixture(t, `{"auto_allow": 0, "max_entries": 4096000}`)
	other := fx.open(`{"auto_allow": 0, "max_entries": 4096000}`)
	const n = 100
	var senders [2][]string
	bucket := fx.f.store.(*recstore.File).Path
	want := bucket(tripletKey("192.0.2.0/24", "s0@sender.test", "b@dest.test"))
	for i := 1; len(senders[1]) < n; i++ {
		s := "s" + itoa(i) + "@sender.test"
		if bucket(tripletKey("192.0.2.0/24", s, "b@dest.test")) == want {
			w := 0
			if len(senders[0]) == n {
				w = 1
			}
			senders[w] = append(senders[w], s)
		}
	}
	var wg sync.WaitGroup
	for w, f := range []*Filter{fx.f, other} {
		wg.Go(func() {
			for _, s := range senders[w] {
				m := tx("192.0.2.1", s, "b@dest.test")
				if v, err := f.Run(context.Background(), stages.Rcpt, m); err != nil || v.Result != Greylisted {
					t.Errorf("writer %d: %v %v", w, v, err)
					return
				}
			}
		})
	}
	wg.Wait()
	fx.clock.add(5 * time.Minute)
	for w, f := range []*Filter{other, fx.f} {
		for _, s := range senders[w] {
			run(t, f, tx("192.0.2.1", s, "b@dest.test"), Passed)
		}
	}
}

func BenchmarkRun(b *testing.B) {
	f, err := newFilter(stages.Env{DataDir: b.TempDir()}, stages.JSONConfig([]byte("{}")), time.Now, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	m := tx("192.0.2.1", "", "b@dest.test")
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		m.From = "s" + itoa(i%50000) + "@sender.test"
		if _, err := f.Run(ctx, stages.Rcpt, m); err != nil {
			b.Fatal(err)
		}
	}
}
