package console

import (
	"bytes"
	"cmp"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"mime/quotedprintable"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"text/template"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

// defaultDigestSubject is [web.digest] subject when the config has none.
const defaultDigestSubject = "Quarantine: {{len .Messages}} message(s) held for {{.Rcpt}}"

// DigestData is what the digest's templates get: one recipient's
// messages held since the last digest, each with its links. Text from
// the messages (subjects, senders) is cleaned to one line.
type DigestData struct {
	Rcpt     string
	Hostname string
	Messages []DigestMessage
	Link     string    // the recipient's whole quarantine
	Lists    string    // their allow- and block-lists
	Expires  time.Time // when the links stop working
}

// DigestMessage is one held message in a digest.
type DigestMessage struct {
	ID, From, Subject, Reason string
	Time                      time.Time
	Score                     float64
	// View opens the message; Release, Allow and Block open a page with
	// the button that does it (mail scanners follow links). Each allows
	// that one thing on that one message (and viewing it), not the rest
	// of the recipient's quarantine. Release is "" for a hold only an
	// admin may release.
	View, Release, Allow, Block string
}

// digestTemplates parses the templates of cfg's digest.
func digestTemplates(cfg *policy.Config) (subject, body *template.Template, err error) {
	d := cfg.Web.Digest
	src := d.Subject
	if src == "" {
		src = defaultDigestSubject
	}
	if subject, err = template.New("subject").Parse(src); err != nil {
		return nil, nil, fmt.Errorf("web.digest.subject: %w", err)
	}
	name, read := "digest.txt", func() ([]byte, error) { return assets.ReadFile("templates/digest.txt") }
	if d.Template != "" {
		name, read = d.Template, func() ([]byte, error) { return os.ReadFile(d.Template) }
	}
	text, err := read()
	if err != nil {
		return nil, nil, fmt.Errorf("web.digest.template: %w", err)
	}
	if body, err = template.New(filepath.Base(name)).Parse(string(text)); err != nil {
		return nil, nil, fmt.Errorf("web.digest.template: %w", err)
	}
	return subject, body, nil
}

// digestFor reports whether rcpt gets digests: its domain is one of
// [web.digest] domains, or by default one the gateway routes.
func digestFor(cfg *policy.Config, routes *policy.RouteTable, rcpt string) bool {
	domain := address.DomainOf(rcpt)
	if len(cfg.Web.Digest.Domains) == 0 {
		return routes.Relays(domain)
	}
	return slices.ContainsFunc(cfg.Web.Digest.Domains, func(p string) bool { return address.Match(p, domain) })
}

// SendDigests sends a digest to each recipient with mail quarantined
// from since to until and not released to them, through the pickup
// directory (the router delivers it; no stage runs on it). It returns how
// many it sent. A recipient whose digest fails is logged and skipped:
// the others still get theirs, and the error names every failure.
func (c *Console) SendDigests(ctx context.Context, since, until time.Time) (int, error) {
	return c.sendDigests(ctx, since, until, nil)
}

// sendDigests is SendDigests keeping progress in run (nil: none): the
// recipients in run.Done are passed over, each one sent is added and run
// saved, so that a run retried after a failure sends each digest once.
//
// A daily run (run not nil) claims each recipient's digest of the day in
// the store first (Options.Claims): of the nodes of a cluster, all due
// to send it, the first to claim it sends it (and sends it again if it
// stops before it could), the others pass it over, so that a recipient
// gets one digest a day. The mail it lists is the cluster's
// (Admin.Quarantined), held since the sending node's last run.
func (c *Console) sendDigests(ctx context.Context, since, until time.Time, run *digestRun) (int, error) {
	cfg := c.opts.Config()
	subject, body, err := digestTemplates(cfg)
	if err != nil {
		return 0, err
	}
	recs, err := c.opts.Admin.Quarantined(ctx, state.Filter{})
	if err != nil {
		return 0, err
	}
	routes := policy.NewRouteTable(cfg.Routes)
	byRcpt := map[string][]*state.QuarantineRecord{}
	var rcpts []string
	for _, rec := range recs {
		if rec.Time.Before(since) || !rec.Time.Before(until) {
			continue
		}
		for _, a := range rec.Pending() {
			key := address.Key(a)
			if !digestFor(cfg, routes, a) {
				continue
			}
			if byRcpt[key] == nil {
				rcpts = append(rcpts, a)
			}
			byRcpt[key] = append(byRcpt[key], rec)
		}
	}
	sent := 0
	var errs []error
	for _, rcpt := range rcpts {
		if err := ctx.Err(); err != nil {
			return sent, errors.Join(append(errs, err)...)
		}
		key := address.Key(rcpt)
		if run != nil && slices.Contains(run.Done, key) {
			continue
		}
		if run != nil && c.opts.Claims != nil {
			mine, err := c.opts.Claims.Claim(ctx, "digest/"+run.Until.Local().Format(time.DateOnly)+"/"+key, cmp.Or(cfg.Cluster.Node, cfg.Hostname))
			if err != nil {
				c.log.Error("web digest not sent: not claimed", "rcpt", rcpt, "err", err)
				errs = append(errs, fmt.Errorf("digest for %s: %w", rcpt, err))
				continue
			}
			if !mine {
				c.log.Info("web digest sent by another node", "rcpt", rcpt)
				if err := run.done(key); err != nil {
					return sent, errors.Join(append(errs, err)...)
				}
				continue
			}
		}
		msg, err := c.digest(ctx, cfg, subject, body, rcpt, byRcpt[key])
		if err == nil {
			err = pickUp(filepath.Join(cfg.DataDir, "pickup"), stages.Pickup{From: cfg.Web.Digest.From, Rcpts: []string{rcpt}}, msg)
		}
		if err != nil {
			c.log.Error("web digest not sent", "rcpt", rcpt, "err", err)
			errs = append(errs, fmt.Errorf("digest for %s: %w", rcpt, err))
			continue
		}
		c.log.Info("web digest queued", "rcpt", rcpt, "messages", len(byRcpt[key]))
		sent++
		if run != nil {
			if err := run.done(key); err != nil {
				return sent, errors.Join(append(errs, err)...)
			}
		}
	}
	return sent, errors.Join(errs...)
}

// digest renders rcpt's digest as a whole RFC 5322 message.
func (c *Console) digest(ctx context.Context, cfg *policy.Config, subject, body *template.Template, rcpt string, recs []*state.QuarantineRecord) ([]byte, error) {
	link, exp, err := c.newLinks(ctx, rcpt)
	if err != nil {
		return nil, err
	}
	base := link(scopeAll, "")
	d := DigestData{Rcpt: rcpt, Hostname: cfg.Hostname, Link: base, Lists: base + "/lists", Expires: exp}
	for _, rec := range recs {
		m := DigestMessage{ID: rec.ID, From: oneLine(rec.From), Subject: oneLine(c.subject(ctx, rec.ID)), Reason: oneLine(rec.Reason),
			Time: rec.Time, Score: rec.Score, View: link("view", rec.ID)}
		if m.From == "" {
			m.From = "<>"
		}
		m.Release, m.Allow, m.Block = link("release", rec.ID), link("allow", rec.ID), link("block", rec.ID)
		if !c.endUserMayRelease(rec) {
			m.Release = ""
		}
		d.Messages = append(d.Messages, m)
	}
	var subj, text bytes.Buffer
	if err := subject.Execute(&subj, d); err != nil {
		return nil, fmt.Errorf("web.digest.subject: %w", err)
	}
	if err := body.Execute(&text, d); err != nil {
		return nil, fmt.Errorf("web.digest.template: %w", err)
	}
	var m bytes.Buffer
	id := make([]byte, 12)
	rand.Read(id)
	for _, f := range [][2]string{
		{"From", cfg.Web.Digest.From},
		{"To", rcpt},
		{"Subject", mime.QEncoding.Encode("utf-8", oneLine(subj.String()))},
		{"Date", c.opts.Now().Format(time.RFC1123Z)},
		{"Message-ID", fmt.Sprintf("<digest.%x@%s>", id, cfg.Hostname)},
		// RFC 3834 §5: an automatic message, not to be answered by
		// vacation responders.
		{"Auto-Submitted", "auto-generated"},
		{"MIME-Version", "1.0"},
		{"Content-Type", "text/plain; charset=utf-8"},
		{"Content-Transfer-Encoding", "quoted-printable"},
	} {
		fmt.Fprintf(&m, "%s: %s\r\n", f[0], f[1])
	}
	m.WriteString("\r\n")
	qp := quotedprintable.NewWriter(&m)
	qp.Write([]byte(strings.ReplaceAll(strings.ReplaceAll(text.String(), "\r\n", "\n"), "\n", "\r\n")))
	if err := qp.Close(); err != nil {
		return nil, err
	}
	return m.Bytes(), nil
}

// oneLine is sender-controlled text fit for one line of a digest: clean,
// line breaks made spaces, at most 200 characters.
func oneLine(s string) string {
	s = strings.Join(strings.Fields(clean(s)), " ")
	if r := []rune(s); len(r) > 200 {
		s = string(r[:199]) + "…"
	}
	return s
}

// pickUp hands a message to the gateway through its pickup directory
// (stages.Pickup): written under a dot name, flushed, renamed into place.
func pickUp(dir string, env stages.Pickup, msg []byte) error {
	line, err := env.Line()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	f, err := os.CreateTemp(dir, ".digest-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	_, err = f.Write(append(line, msg...))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(f.Name(), filepath.Join(dir, strings.TrimPrefix(filepath.Base(f.Name()), ".")))
}

// digestNow sends the digests of the last day at once: an admin's
// button, for a first look at what users get.
func (c *Console) digestNow(w http.ResponseWriter, r *http.Request, v view) {
	now := c.opts.Now()
	n, err := c.SendDigests(r.Context(), now.Add(-24*time.Hour), now)
	if err != nil {
		c.log.Error("web digest", "err", err)
		c.fail(w, v, http.StatusInternalServerError, fmt.Sprintf("%d digest(s) queued; others could not be sent, the log says why.", n))
		return
	}
	c.audit(r.Context(), v, "digest.send", "", fmt.Sprintf("%d digests", n))
	c.done(w, v, "/quarantine", fmt.Sprintf("%d digest(s) queued, for the mail held in the last 24 hours.", n))
}

// digestTick is how often the digest loop looks at the clock and the
// config.
const digestTick = time.Minute

// digestLoop sends the digests each day at [web.digest] at, for the mail
// held since the last ones; a gateway that was down at that time sends
// them when it starts. The time of the last digests is kept in
// <data_dir>/web/digest-sent.
func (c *Console) digestLoop(ctx context.Context) {
	t := time.NewTicker(digestTick)
	defer t.Stop()
	for {
		if err := c.digestDue(ctx); err != nil && ctx.Err() == nil {
			c.log.Error("web digest", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// digestRun is the state of the daily digests, in
// <data_dir>/web/digest-sent: the mail held since Last went out in the
// last complete run; a run in progress (Until set) has sent to Done.
type digestRun struct {
	Last  time.Time `json:"last"`
	Until time.Time `json:"until,omitzero"`
	Done  []string  `json:"done,omitempty"` // address.Key
	file  string
}

// loadDigestRun reads file; one written before runs were recorded holds
// the time alone.
func loadDigestRun(file string, now time.Time) (*digestRun, error) {
	run := &digestRun{Last: now.Add(-24 * time.Hour), file: file}
	b, err := os.ReadFile(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return run, nil
	case err != nil:
		return nil, err
	}
	if t, err := time.Parse(time.RFC3339Nano, strings.TrimSpace(string(b))); err == nil {
		run.Last = t
	} else if err := json.Unmarshal(b, run); err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return run, nil
}

// done records the recipient key as done and saves r.
func (r *digestRun) done(key string) error {
	r.Done = append(r.Done, key)
	return r.save()
}

func (r *digestRun) save() error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	tmp := r.file + ".tmp"
	if err := os.WriteFile(tmp, append(b, '\n'), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, r.file)
}

// digestRetryFor is how long a run that failed for some recipients is
// retried (each digestTick) before they are given up on, logged.
const digestRetryFor = 12 * time.Hour

// digestDue sends the digests if today's are due and not sent, and
// retries those of a run that failed for some recipients.
func (c *Console) digestDue(ctx context.Context) error {
	cfg := c.opts.Config()
	if cfg.Web.Digest.At == "" {
		return nil
	}
	at, err := time.Parse("15:04", cfg.Web.Digest.At)
	if err != nil {
		return err
	}
	now := c.opts.Now()
	y, m, d := now.Date()
	due := time.Date(y, m, d, at.Hour(), at.Minute(), 0, 0, now.Location())
	run, err := loadDigestRun(filepath.Join(cfg.DataDir, "web", "digest-sent"), now)
	if err != nil {
		return err
	}
	if run.Until.IsZero() {
		if now.Before(due) || !run.Last.Before(due) {
			return nil
		}
		run.Until = now
		if err := run.save(); err != nil {
			return err
		}
	}
	_, err = c.sendDigests(ctx, run.Last, run.Until, run)
	if err != nil && now.Sub(run.Until) < digestRetryFor {
		return err // retried at the next tick, for those not sent
	}
	if err != nil {
		c.log.Error("web digest given up for some recipients", "err", err)
	}
	*run = digestRun{Last: run.Until, file: run.file}
	return run.save()
}
