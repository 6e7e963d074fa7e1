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

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/state"
)

// linkPath is the path of rcpt's link, valid for [web] link_ttl.
func (e *testEnv) linkPath(rcpt string) string {
	e.t.Helper()
	link, _, err := e.c.newLinks(context.Background(), rcpt)
	if err != nil {
		e.t.Fatal(err)
	}
	return strings.TrimPrefix(link(scopeAll, ""), "https://console.example.test")
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

// TestEndUserPageNamesNoOtherRecipient: an end user's page of a message
// sent to several (some of them Bcc: the envelope holds them all) names
// their own address only, and says whether it was released to them, not
// to whom else; the admin's page names every recipient and release.
func TestEndUserPageNamesNoOtherRecipient(t *testing.T) {
	e := newTestEnv(t, "")
	rec := e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test", "dave@example.test"},
		"To: bob@example.test\r\nSubject: for several\r\n\r\nhi\r\n", time.Now())
	admin := e.browser()
	tok := admin.login("admin")
	r := admin.post("/quarantine/"+rec.ID+"/release", url.Values{"csrf": {tok}, "rcpt": {"carol@example.test"}})
	if r.code != http.StatusOK {
		t.Fatalf("release to carol: %d\n%s", r.code, r.body)
	}
	carolCopy := regexp.MustCompile(`queued as (\w+)`).FindStringSubmatch(r.body)[1]
	page := admin.get("/quarantine/" + rec.ID)
	for _, want := range []string{"carol@example.test", "dave@example.test", carolCopy} {
		if !strings.Contains(page.body, want) {
			t.Errorf("the admin's page lacks %s", want)
		}
	}
	b := e.browser()
	home := e.linkPath("bob@example.test")
	page = b.get(home + "/" + rec.ID)
	if page.code != http.StatusOK || !strings.Contains(page.body, "bob@example.test") {
		t.Fatalf("bob's page: %d\n%s", page.code, page.body)
	}
	for _, other := range []string{"carol@example.test", "dave@example.test", carolCopy} {
		if strings.Contains(page.body, other) {
			t.Errorf("bob's page shows %s", other)
		}
	}
	if strings.Contains(page.body, "badge released") {
		t.Errorf("bob's page says released: the release was carol's")
	}
	r = b.post(home+"/"+rec.ID+"/release", url.Values{"csrf": {csrfRE.FindStringSubmatch(page.body)[1]}})
	if r.code != http.StatusOK {
		t.Fatalf("bob's release: %d\n%s", r.code, r.body)
	}
	bobCopy := regexp.MustCompile(`queued as (\w+)`).FindStringSubmatch(r.body)[1]
	page = b.get(home + "/" + rec.ID)
	if !strings.Contains(page.body, "badge released") || !strings.Contains(page.body, bobCopy) {
		t.Errorf("bob's page does not say it was released to him as %s\n%s", bobCopy, page.body)
	}
	for _, other := range []string{"carol@example.test", "dave@example.test", carolCopy} {
		if strings.Contains(page.body, other) {
			t.Errorf("bob's page after his release shows %s", other)
		}
	}
}

// TestEndUserMailboxOneRule: what opens a recipient's mail and what a
// revocation of their links ends are the same mailbox by one rule
// (address.Key): the ASCII letters of the local part without case, any
// other character as written. "ſam" (U+017F, which Unicode folds to "s")
// is not sam: its link opens none of sam's mail. "İsam" (U+0130, which
// strings.ToLower makes "isam") is not isam: ending isam's links leaves
// its link working. "SAM" is sam, both ways.
func TestEndUserMailboxOneRule(t *testing.T) {
	e := newTestEnv(t, "")
	sams := e.quarantined("a@shop.example", []string{"sam@example.test"}, "Subject: for sam\r\n\r\nhi\r\n", time.Now())
	e.quarantined("a@shop.example", []string{"isam@example.test"}, "Subject: for isam\r\n\r\nhi\r\n", time.Now())
	b := e.browser()
	if r := b.get(e.linkPath("ſam@example.test") + "/" + sams.ID); r.code != http.StatusNotFound {
		t.Errorf("sam's message through the link of ſam: %d, want 404", r.code)
	}
	upper := e.linkPath("SAM@example.test")
	if r := b.get(upper + "/" + sams.ID); r.code != http.StatusOK {
		t.Errorf("sam's message through the link of SAM: %d, want 200", r.code)
	}
	dotted := e.linkPath("İsam@example.test")
	admin := e.browser()
	token := admin.login("admin")
	for _, owner := range []string{"isam@example.test", "sam@example.test"} {
		if r := admin.post("/links/revoke", url.Values{"csrf": {token}, "owner": {owner}}); r.code != http.StatusOK {
			t.Fatalf("revoke %s: %d\n%s", owner, r.code, r.body)
		}
	}
	if r := b.get(dotted); r.code != http.StatusOK {
		t.Errorf("ending isam's links ended İsam's: %d", r.code)
	}
	if r := b.get(upper); r.code != http.StatusForbidden {
		t.Errorf("ending sam's links left SAM's working: %d", r.code)
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
		virus := e.quarantined("a@shop.example", []string{"bob@example.test"}, "Subject: invoice\r\n\r\nhi\r\n", time.Now(), func(r *state.QuarantineRecord) {
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

// digestLinks sends the digests of the last day and returns rcpt's, its
// links by what they are ("All mail held for you", and per message
// "read", "release", "allow sender", "block sender"), as paths.
func (e *testEnv) digestLinks(rcpt string) map[string][]string {
	e.t.Helper()
	os.RemoveAll(filepath.Join(e.dir, "pickup"))
	e.c.opts.Config().Web.Digest.Domains = []string{"example.test"}
	now := e.clock()
	if _, err := e.c.SendDigests(context.Background(), now.Add(-24*time.Hour), now.Add(time.Second)); err != nil {
		e.t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(e.dir, "pickup", "digest-*"))
	for _, f := range files {
		b, _ := os.ReadFile(f)
		env, err := stages.ReadPickup(bufio.NewReader(strings.NewReader(string(b))))
		if err != nil || env.Rcpts[0] != rcpt {
			continue
		}
		_, body, _ := strings.Cut(string(b), "\r\n\r\n")
		dec, _ := readAllString(quotedprintable.NewReader(strings.NewReader(body)))
		links := map[string][]string{}
		for _, m := range regexp.MustCompile(`(?m)^\s*([a-zA-Z ]+?):\s+https://console\.example\.test(/u/\S+)\r?$`).FindAllStringSubmatch(dec, -1) {
			links[m[1]] = append(links[m[1]], m[2])
		}
		return links
	}
	e.t.Fatalf("no digest for %s", rcpt)
	return nil
}

// TestEndUserLinkScopes: a digest's link for one message and one action
// opens that action on that message (and the message), nothing else: not
// the recipient's quarantine or lists, not another message, theirs or
// another mailbox's, not another action; a "read" link changes nothing.
func TestEndUserLinkScopes(t *testing.T) {
	e := newTestEnv(t, "")
	now := e.clock()
	first := e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: first\r\n\r\nhi\r\n", now.Add(-time.Hour))
	second := e.quarantined("x@spam.example", []string{"bob@example.test"}, "Subject: second\r\n\r\nhi\r\n", now.Add(-time.Hour))
	carols := e.quarantined("y@other.example", []string{"carol@example.test"}, "Subject: carol's\r\n\r\nhi\r\n", now.Add(-time.Hour))
	links := e.digestLinks("bob@example.test")
	if len(links["release"]) != 2 || len(links["read"]) != 2 || len(links["All mail held for you"]) != 1 {
		t.Fatalf("bob's digest links %q", links)
	}
	// The digest lists the newest first: find first's links by its ID.
	pick := func(kind string) string {
		for _, l := range links[kind] {
			if strings.Contains(l, "/"+first.ID) {
				return l
			}
		}
		t.Fatalf("no %s link of %s in %q", kind, first.ID, links[kind])
		return ""
	}
	release, read := pick("release"), pick("read")
	b := e.browser()
	r := b.get(release)
	if r.code != http.StatusOK || !strings.Contains(r.body, "Release this message to me") || strings.Contains(r.body, "/lists") {
		t.Fatalf("the release link: %d\n%s", r.code, r.body)
	}
	csrf := csrfRE.FindStringSubmatch(r.body)[1]
	tok := strings.Split(release, "/")[2]
	u := "/u/" + tok
	for _, c := range []struct{ method, path string }{
		{"GET", u},                                 // bob's quarantine
		{"GET", u + "/lists"},                      // his lists
		{"POST", u + "/lists"},                     // a change of them
		{"POST", u + "/bulk"},                      // everything at once
		{"POST", u + "/revoke"},                    // his links
		{"GET", u + "/" + second.ID},               // another of his messages
		{"GET", u + "/" + second.ID + "/release"},  // its release
		{"POST", u + "/" + second.ID + "/release"}, // released
		{"GET", u + "/" + carols.ID},               // another mailbox's message
		{"POST", u + "/" + carols.ID + "/release"}, // released
		{"GET", u + "/" + first.ID + "/block"},     // another action on its message
		{"POST", u + "/" + first.ID + "/allow"},    // done
		{"POST", u + "/" + first.ID + "/delete"},   // done
		{"POST", "/u/" + strings.Split(read, "/")[2] + "/" + first.ID + "/release"}, // a read link's release
	} {
		form := url.Values{"csrf": {csrf}, "op": {"release"}, "id": {second.ID, carols.ID}, "kind": {"allow"}, "sender": {"evil.example"}}
		if strings.Contains(c.path, strings.Split(read, "/")[2]) {
			// A page of it has no form: its token, as it would be.
			form.Set("csrf", e.c.keys.csrfToken("link "+strings.Split(read, "/")[2]))
		}
		if r := b.do(c.method, c.path, form, nil); r.code != http.StatusForbidden || strings.Contains(r.body, "second") || strings.Contains(r.body, "carol&#39;s") {
			t.Errorf("%s %s with the release link of %s: %d, want 403\n%s", c.method, c.path, first.ID, r.code, r.body)
		}
	}
	if queued, _ := e.backend.spool.List(); len(queued) != 0 {
		t.Fatalf("refused requests queued %d messages", len(queued))
	}
	if entries, _ := e.c.opts.Lists.Entries(context.Background(), ""); len(entries) != 0 {
		t.Fatalf("refused requests listed %+v", entries)
	}
	// The read link shows the message and offers nothing it may not do.
	r = b.get(read)
	if r.code != http.StatusOK || !strings.Contains(r.body, "first") || strings.Contains(r.body, `id="release"`) ||
		strings.Contains(r.body, `id="block"`) || strings.Contains(r.body, "/lists") {
		t.Errorf("the read link: %d\n%s", r.code, r.body)
	}
	// The release link shows its message with the release alone, and
	// releases it to bob alone.
	r = b.get(u + "/" + first.ID)
	if r.code != http.StatusOK || !strings.Contains(r.body, `id="release"`) || strings.Contains(r.body, `id="allow"`) || strings.Contains(r.body, `id="delete"`) {
		t.Errorf("the release link's message page: %d\n%s", r.code, r.body)
	}
	r = b.post(u+"/"+first.ID+"/release", url.Values{"csrf": {csrf}})
	if r.code != http.StatusOK || !strings.Contains(r.body, `href="`+u+"/"+first.ID+`"`) {
		t.Fatalf("release: %d\n%s", r.code, r.body)
	}
	queued, _ := e.backend.spool.List()
	if len(queued) != 1 || len(queued[0].Rcpts) != 1 || queued[0].Rcpts[0].Addr != "bob@example.test" {
		t.Fatalf("queued %+v, want one copy for bob", queued)
	}
}

// TestEndUserLinksRevoked: an admin's "end the links" of a recipient
// refuses every link mailed to them before, whole or for one message,
// also on a console started again (another node, a restart); links made
// after work, another recipient's are untouched. A recipient ends their
// own links from their quarantine.
func TestEndUserLinksRevoked(t *testing.T) {
	e := newTestEnv(t, "")
	msg := e.quarantined("a@shop.example", []string{"bob@example.test", "carol@example.test"}, "Subject: held\r\n\r\nhi\r\n", e.clock().Add(-time.Hour))
	links := e.digestLinks("bob@example.test")
	old := []string{links["All mail held for you"][0], links["read"][0], links["release"][0]}
	carol := e.linkPath("carol@example.test")
	b := e.browser()
	for _, l := range append(old, carol) {
		if r := b.get(l); r.code != http.StatusOK {
			t.Fatalf("%s before the revocation: %d", l, r.code)
		}
	}
	admin := e.browser()
	token := admin.login("admin")
	if r := admin.get("/lists?owner=bob@example.test"); !strings.Contains(r.body, `id="revoke-links"`) {
		t.Errorf("bob's lists page has no button to end his links\n%s", r.body)
	}
	if r := admin.post("/links/revoke", url.Values{"csrf": {token}, "owner": {"Bob@Example.test"}}); r.code != http.StatusOK {
		t.Fatalf("revoke: %d\n%s", r.code, r.body)
	}
	for _, env := range []*testEnv{e, e.restarted()} {
		b := env.browser()
		for _, l := range old {
			if r := b.get(l); r.code != http.StatusForbidden || !strings.Contains(r.body, "revoked") || strings.Contains(r.body, "held") {
				t.Errorf("%s after the revocation: %d\n%s", l, r.code, r.body)
			}
		}
		if r := b.get(carol); r.code != http.StatusOK || !strings.Contains(r.body, "held") {
			t.Errorf("carol's link after bob's were revoked: %d", r.code)
		}
		if r := b.get(env.linkPath("bob@example.test")); r.code != http.StatusOK || !strings.Contains(r.body, "held") {
			t.Errorf("a link made after the revocation: %d", r.code)
		}
	}
	audit, _ := e.c.opts.Audit.Entries(context.Background(), state.AuditFilter{Action: "links.revoke"})
	if len(audit) != 1 || audit[0].Actor != "console:admin" || audit[0].Target != "bob@example.test" {
		t.Errorf("audit %+v", audit)
	}
	// Carol ends her own links: the one she used too.
	r := b.get(carol)
	if r := b.post(carol+"/revoke", url.Values{"csrf": {csrfRE.FindStringSubmatch(r.body)[1]}}); r.code != http.StatusOK || !strings.Contains(r.body, "stopped working") {
		t.Fatalf("carol ends her links: %d\n%s", r.code, r.body)
	}
	if r := b.get(carol + "/" + msg.ID); r.code != http.StatusForbidden {
		t.Errorf("carol's link after she ended it: %d", r.code)
	}
}
