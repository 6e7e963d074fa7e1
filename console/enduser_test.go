package console

import (
	"bufio"
	"context"
	"mime/quotedprintable"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
)

// linkPath is the path of rcpt's link, valid for [web] link_ttl.
func (e *testEnv) linkPath(rcpt string) string {
	u := e.c.LinkURL(rcpt)
	return strings.TrimPrefix(u, "https://console.example.test")
}

// TestEndUserSeesOwnMailOnly: a recipient's link lists their messages
// and no one else's, opens none of another's, and releases a message
// sent to several to them alone.
func TestEndUserSeesOwnMailOnly(t *testing.T) {
	e := newTestEnv(t, "")
	mine := e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: for both\r\n\r\nhi\r\n", time.Now())
	theirs := e.quarantined("x@other.example", []string{"carol@example.test"}, "Subject: carol only\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	home := e.linkPath("Bob@example.test")
	r := b.get(home)
	if r.code != http.StatusOK || !strings.Contains(r.body, "for both") || strings.Contains(r.body, "carol only") {
		t.Fatalf("bob's list: %d\n%s", r.code, r.body)
	}
	if strings.Contains(r.body, "carol@example.test") {
		t.Errorf("bob's list names the other recipient")
	}
	if r := b.get(home + "/" + theirs.ID); r.code != http.StatusNotFound {
		t.Errorf("carol's message through bob's link: %d, want 404", r.code)
	}
	if r := b.get(home + "/" + theirs.ID + "/release"); r.code != http.StatusNotFound {
		t.Errorf("carol's confirm page through bob's link: %d, want 404", r.code)
	}
	// The link a digest carries opens a page; nothing is done yet.
	r = b.get(home + "/" + mine.ID + "/release")
	if r.code != http.StatusOK || !strings.Contains(r.body, "Release this message to me") {
		t.Fatalf("confirm page: %d\n%s", r.code, r.body)
	}
	if list, _ := e.backend.spool.List(); len(list) != 0 {
		t.Fatal("a GET released something")
	}
	tok := csrfRE.FindStringSubmatch(r.body)[1]
	if r := b.post(home+"/"+mine.ID+"/release", url.Values{}); r.code != http.StatusForbidden {
		t.Errorf("release without the CSRF token: %d", r.code)
	}
	if r := b.post(home+"/"+theirs.ID+"/delete", url.Values{"csrf": {tok}}); r.code != http.StatusNotFound {
		t.Errorf("deleting carol's message: %d", r.code)
	}
	r = b.post(home+"/"+mine.ID+"/release", url.Values{"csrf": {tok}, "rcpt": {"carol@example.test"}})
	if r.code != http.StatusOK || !strings.Contains(r.body, "for bob@example.test") {
		t.Fatalf("release: %d\n%s", r.code, r.body)
	}
	list, _ := e.backend.spool.List()
	if len(list) != 1 || len(list[0].Rcpts) != 1 || list[0].Rcpts[0].Addr != "bob@example.test" {
		t.Fatalf("queued %+v, want one copy for bob alone", list)
	}
	if r := b.get(home); strings.Contains(r.body, "for both") {
		t.Errorf("released message still listed for bob")
	}
	// Deleting a message others still wait for is refused.
	cl := e.linkPath("carol@example.test")
	ctok := b.csrf(cl)
	if r := b.post(cl+"/"+mine.ID+"/delete", url.Values{"csrf": {ctok}}); r.code != http.StatusBadRequest || !strings.Contains(r.body, "other recipients") {
		t.Errorf("carol deleting a shared message: %d\n%s", r.code, r.body)
	}
	// Allow is for the link's recipient only.
	if r := b.post(cl+"/"+theirs.ID+"/allow", url.Values{"csrf": {ctok}}); r.code != http.StatusOK {
		t.Fatalf("allow: %d\n%s", r.code, r.body)
	}
	entries, _ := e.c.opts.Lists.Entries(context.Background(), "")
	if len(entries) != 1 || entries[0].Owner != "carol@example.test" || entries[0].Sender != "x@other.example" || entries[0].By != "console:carol@example.test" {
		t.Fatalf("entries %+v", entries)
	}
	if r := b.get(cl + "/lists"); !strings.Contains(r.body, "x@other.example") {
		t.Errorf("carol's lists page lacks her entry")
	}
	if r := b.get(home + "/lists"); strings.Contains(r.body, "x@other.example") {
		t.Errorf("bob's lists page shows carol's entry")
	}
	// An end user's list change is theirs whatever the form says.
	btok := b.csrf(home + "/lists")
	b.post(home+"/lists", url.Values{"csrf": {btok}, "op": {"add"}, "owner": {"carol@example.test"}, "kind": {"block"}, "sender": {"@spam.example"}})
	if entries, _ := e.c.opts.Lists.Entries(context.Background(), "carol@example.test"); len(entries) != 1 {
		t.Fatalf("bob changed carol's list: %+v", entries)
	}
	if entries, _ := e.c.opts.Lists.Entries(context.Background(), "bob@example.test"); len(entries) != 1 || entries[0].Kind != state.Block {
		t.Fatalf("bob's entries %+v", entries)
	}
}

// TestEndUserLinkExpires: a link works until link_ttl, then says it has
// expired (410); a changed link is refused (403); neither shows mail.
func TestEndUserLinkExpires(t *testing.T) {
	e := newTestEnv(t, `link_ttl = "48h"`)
	e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: held\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	home := e.linkPath("bob@example.test")
	e.advance(47 * time.Hour)
	if r := b.get(home); r.code != http.StatusOK || !strings.Contains(r.body, "held") {
		t.Fatalf("before expiry: %d", r.code)
	}
	e.advance(time.Hour)
	if r := b.get(home); r.code != http.StatusGone || strings.Contains(r.body, "held") || !strings.Contains(r.body, "expired") {
		t.Fatalf("after expiry: %d\n%s", r.code, r.body)
	}
	bad := strings.Replace(home, "/u/", "/u/"+b64([]byte("carol@example.test"))+"x", 1)
	if r := b.get(bad); r.code != http.StatusForbidden {
		t.Errorf("changed link: %d, want 403", r.code)
	}
}

// TestDigest: each recipient with held mail gets one digest through the
// pickup directory, from [web.digest] from, whose links open their
// quarantine; a sender's subject stays one line of text; an admin's own
// template is used.
func TestDigest(t *testing.T) {
	e := newTestEnv(t, "[web.digest]\nat = \"07:00\"\nfrom = \"quarantine@example.test\"\n")
	now := time.Now()
	e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: sale\r\n\r\nhi\r\n", now.Add(-time.Hour))
	e.quarantined("x@spam.example", []string{"bob@example.test"}, "Subject: =?UTF-8?Q?line1=0Arelease:_https://evil.example/?=\r\n\r\nhi\r\n", now.Add(-2*time.Hour))
	e.quarantined("old@spam.example", []string{"bob@example.test"}, "Subject: old\r\n\r\nhi\r\n", now.Add(-48*time.Hour))
	e.quarantined("y@spam.example", []string{"someone@elsewhere.example"}, "Subject: outbound\r\n\r\nhi\r\n", now.Add(-time.Hour))
	// Routed domains get digests by default; configure one.
	e.c.opts.Config().Web.Digest.Domains = []string{"example.test"}
	n, err := e.c.SendDigests(context.Background(), now.Add(-24*time.Hour), now)
	if err != nil || n != 2 {
		t.Fatalf("SendDigests = %d, %v; want 2 (bob, carol)", n, err)
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "pickup", "digest-*"))
	if len(files) != 2 {
		t.Fatalf("pickup files %v", files)
	}
	var bob string
	for _, f := range files {
		b, _ := os.ReadFile(f)
		env, err := stages.ReadPickup(bufio.NewReader(strings.NewReader(string(b))))
		if err != nil || env.From != "quarantine@example.test" || len(env.Rcpts) != 1 {
			t.Fatalf("%s: %+v %v", f, env, err)
		}
		if env.Rcpts[0] == "bob@example.test" {
			bob = string(b)
		}
	}
	if bob == "" {
		t.Fatal("no digest for bob")
	}
	head, body, _ := strings.Cut(bob, "\r\n\r\n")
	for _, want := range []string{"To: bob@example.test\r\n", "Subject: Quarantine: 2 message(s) held for bob@example.test\r\n", "Auto-Submitted: auto-generated\r\n"} {
		if !strings.Contains(head, want) {
			t.Errorf("header lacks %q:\n%s", want, head)
		}
	}
	dec, _ := readAllString(quotedprintable.NewReader(strings.NewReader(body)))
	if !strings.Contains(dec, "* sale") || !strings.Contains(dec, "* line1 release: https://evil.example/") || strings.Contains(dec, "old") || strings.Contains(dec, "outbound") {
		t.Fatalf("digest body:\n%s", dec)
	}
	// Its link opens bob's quarantine.
	link := regexp.MustCompile(`All mail held for you: (\S+)`).FindStringSubmatch(dec)
	if link == nil {
		t.Fatalf("no link in\n%s", dec)
	}
	r := e.browser().get(strings.TrimPrefix(link[1], "https://console.example.test"))
	if r.code != http.StatusOK || !strings.Contains(r.body, "sale") {
		t.Fatalf("digest link: %d", r.code)
	}

	// The admin's template.
	tmpl := filepath.Join(e.dir, "digest.tmpl")
	os.WriteFile(tmpl, []byte("Dear {{.Rcpt}}: {{range .Messages}}[{{.Subject}}] {{end}}\n"), 0o644)
	e.c.opts.Config().Web.Digest.Template = tmpl
	e.c.opts.Config().Web.Digest.Subject = "Held for you: {{len .Messages}}"
	os.RemoveAll(filepath.Join(e.dir, "pickup"))
	if _, err := e.c.SendDigests(context.Background(), now.Add(-24*time.Hour), now); err != nil {
		t.Fatal(err)
	}
	files, _ = filepath.Glob(filepath.Join(e.dir, "pickup", "digest-*"))
	found := false
	for _, f := range files {
		b, _ := os.ReadFile(f)
		if strings.Contains(string(b), "Subject: Held for you: 2\r\n") && strings.Contains(string(b), "Dear bob@example.test: [") && strings.Contains(string(b), "[sale]") {
			found = true
		}
	}
	if !found {
		t.Fatalf("the admin's template was not used")
	}
}

func readAllString(r interface{ Read([]byte) (int, error) }) (string, error) {
	var b strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := r.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			return b.String(), nil
		}
	}
}

// TestDigestDue: the digests go out once a day, after [web.digest] at,
// and a gateway down at that time sends them when it starts.
func TestDigestDue(t *testing.T) {
	e := newTestEnv(t, "[web.digest]\nat = \"07:00\"\ndomains = [\"example.test\"]\n")
	day := time.Date(2030, 5, 6, 6, 59, 0, 0, time.Local)
	e.mu.Lock()
	e.now = day
	e.mu.Unlock()
	e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: sale\r\n\r\nhi\r\n", day.Add(-time.Hour))
	count := func() int {
		files, _ := filepath.Glob(filepath.Join(e.dir, "pickup", "digest-*"))
		return len(files)
	}
	if err := e.c.digestDue(context.Background()); err != nil || count() != 0 {
		t.Fatalf("before 07:00: %v, %d digests", err, count())
	}
	e.advance(2 * time.Minute)
	if err := e.c.digestDue(context.Background()); err != nil || count() != 1 {
		t.Fatalf("at 07:01: %v, %d digests", err, count())
	}
	e.advance(time.Hour)
	if err := e.c.digestDue(context.Background()); err != nil || count() != 1 {
		t.Fatalf("later that day: %v, %d digests, want still 1", err, count())
	}
	// The next day, only what came since.
	e.quarantined("b@shop.example", []string{"bob@example.test"}, "Subject: new\r\n\r\nhi\r\n", day.Add(3*time.Hour))
	e.advance(24 * time.Hour)
	if err := e.c.digestDue(context.Background()); err != nil || count() != 2 {
		t.Fatalf("next day: %v, %d digests", err, count())
	}
}

// TestDigestRecipientFails: a recipient whose digest fails is skipped,
// the others get theirs; the next tick retries that one alone, so nobody
// gets a digest twice; once it goes out, the run is complete.
func TestDigestRecipientFails(t *testing.T) {
	e := newTestEnv(t, "[web.digest]\nat = \"07:00\"\ndomains = [\"example.test\"]\n")
	day := time.Date(2030, 5, 6, 7, 1, 0, 0, time.Local)
	e.mu.Lock()
	e.now = day
	e.mu.Unlock()
	for _, rcpt := range []string{"alice@example.test", "bob@example.test", "carol@example.test"} {
		e.quarantined("a@shop.example", []string{rcpt}, "Subject: sale\r\n\r\nhi\r\n", day.Add(-time.Hour))
	}
	// bob's digest cannot be made: his template fails.
	tmpl := filepath.Join(e.dir, "digest.tmpl")
	os.WriteFile(tmpl, []byte(`{{if eq .Rcpt "bob@example.test"}}{{index .Messages 9}}{{end}}Dear {{.Rcpt}}`+"\n"), 0o644)
	e.c.opts.Config().Web.Digest.Template = tmpl
	digests := func() map[string]int {
		got := map[string]int{}
		files, _ := filepath.Glob(filepath.Join(e.dir, "pickup", "digest-*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			env, err := stages.ReadPickup(bufio.NewReader(strings.NewReader(string(b))))
			if err != nil {
				t.Fatal(err)
			}
			got[env.Rcpts[0]]++
		}
		return got
	}
	err := e.c.digestDue(context.Background())
	if err == nil || !strings.Contains(err.Error(), "bob@example.test") {
		t.Fatalf("digestDue = %v, want bob's failure", err)
	}
	if got := digests(); got["alice@example.test"] != 1 || got["carol@example.test"] != 1 || got["bob@example.test"] != 0 {
		t.Fatalf("digests %v, want alice's and carol's", got)
	}
	e.advance(time.Minute)
	if err := e.c.digestDue(context.Background()); err == nil {
		t.Fatal("bob's digest still fails: want the error again")
	}
	os.WriteFile(tmpl, []byte("Dear {{.Rcpt}}\n"), 0o644)
	e.advance(time.Minute)
	if err := e.c.digestDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	e.advance(time.Minute)
	if err := e.c.digestDue(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got := digests(); len(got) != 3 || got["alice@example.test"] != 1 || got["bob@example.test"] != 1 || got["carol@example.test"] != 1 {
		t.Fatalf("digests %v, want one each", got)
	}
}

// TestEndUserReleasesScoreHoldsOnly: an end user releases what a score
// threshold held, not what a stage held by its own action (a virus): the
// page, the confirm link and the digest say to ask the administrator, a
// POST is refused and nothing is queued; an admin releases it; a stage
// [web] enduser_release lists is released by end users too.
func TestEndUserReleasesScoreHoldsOnly(t *testing.T) {
	for _, listed := range []bool{false, true} {
		extra := ""
		if listed {
			extra = "enduser_release = [\"clamav\"]\n[[stage]]\nname = \"clamav\"\nkind = \"clamav\""
		}
		e := newTestEnv(t, extra)
		virus := e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: invoice\r\n\r\nhi\r\n", time.Now(), func(r *quarantine.Record) {
			r.Stage, r.Reason, r.ByScore = "clamav", "infected: Eicar-Test-Signature", false
		})
		b := e.browser()
		home := e.linkPath("bob@example.test")
		page := b.get(home + "/" + virus.ID)
		tok := csrfRE.FindStringSubmatch(page.body)[1]
		r := b.post(home+"/"+virus.ID+"/release", url.Values{"csrf": {tok}})
		queued, _ := e.backend.spool.List()
		if listed {
			if r.code != http.StatusOK || len(queued) != 1 {
				t.Errorf("enduser_release = [clamav]: release %d, %d queued\n%s", r.code, len(queued), r.body)
			}
			continue
		}
		if !strings.Contains(page.body, "ask your administrator") || strings.Contains(page.body, `id="release"`) {
			t.Errorf("bob's page of a virus offers a release\n%s", page.body)
		}
		if c := b.get(home + "/" + virus.ID + "/release"); c.code != http.StatusForbidden || !strings.Contains(c.body, "ask your administrator") {
			t.Errorf("confirm page of a virus: %d\n%s", c.code, c.body)
		}
		if r.code != http.StatusBadRequest || !strings.Contains(r.body, "ask your administrator") || len(queued) != 0 {
			t.Fatalf("bob released a virus: %d, %d queued\n%s", r.code, len(queued), r.body)
		}
		admin := e.browser()
		atok := admin.login("admin")
		if r := admin.post("/quarantine/"+virus.ID+"/release", url.Values{"csrf": {atok}}); r.code != http.StatusOK {
			t.Fatalf("admin release: %d\n%s", r.code, r.body)
		}
		if queued, _ := e.backend.spool.List(); len(queued) != 1 {
			t.Fatalf("admin release queued %d", len(queued))
		}
	}
}
