package console

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/policy"
	"github.com/mailgate/mailgate/stages/address"
)

// loadSecret reads the signing key from path, or makes a random one there
// when the file does not exist: hex, 32 bytes, mode 0600, written under a
// temporary name and linked into place so that two processes starting at
// once end up with the same key.
func loadSecret(path string) ([]byte, error) {
	b, err := readSecret(path)
	if errors.Is(err, fs.ErrNotExist) {
		if err := makeSecret(path); err != nil {
			return nil, err
		}
		b, err = readSecret(path)
	}
	if err != nil {
		return nil, err
	}
	key, err := hex.DecodeString(strings.TrimSpace(string(b)))
	if err != nil || len(key) < 16 {
		return nil, fmt.Errorf("%s: expect at least 16 bytes in hex (32 random bytes are made when the file does not exist)", path)
	}
	return key, nil
}

// readSecret reads the key file, refusing one that the group or others
// may read: whoever reads it can forge sessions and links.
func readSecret(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if m := st.Mode().Perm(); m&0o077 != 0 {
		return nil, fmt.Errorf("%s may be read by others than its owner (mode %04o), and it signs sessions and links; run: chmod 600 %s", path, m, path)
	}
	return io.ReadAll(f)
}

func makeSecret(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	key := make([]byte, 32)
	rand.Read(key)
	tmp, err := os.CreateTemp(filepath.Dir(path), ".secret-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.WriteString(hex.EncodeToString(key) + "\n")
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Link(tmp.Name(), path)
	}
	if errors.Is(err, fs.ErrExist) {
		return nil // another process made it first: use that
	}
	return err
}

// keys signs and checks what the console hands out: each use has a key
// of its own, derived from the secret, so that a token made for one use
// is worth nothing in another.
type keys struct{ session, csrf, link []byte }

func newKeys(secret []byte) keys {
	derive := func(use string) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write([]byte("mailgate console " + use))
		return m.Sum(nil)
	}
	return keys{session: derive("session"), csrf: derive("csrf"), link: derive("link")}
}

func sign(key []byte, parts ...string) string {
	m := hmac.New(sha256.New, key)
	for _, p := range parts {
		// Length-prefixed: no two lists of parts sign the same bytes.
		fmt.Fprintf(m, "%d:%s", len(p), p)
	}
	return b64(m.Sum(nil))
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

func unb64(s string) (string, bool) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	return string(b), err == nil
}

// session is a logged-in admin or auditor.
type session struct {
	User  policy.WebUser
	token string // the cookie's value
	id    string // the random ID the token carries: what a logout revokes
	exp   time.Time
}

// newSession is the cookie value of a session of u until exp: the name,
// the expiry, a random ID (for logout) and a MAC over them and the
// user's password hash and role, so that a changed password or role in
// the config ends the sessions made before.
func (k keys) newSession(u policy.WebUser, exp time.Time) string {
	id := make([]byte, 16)
	rand.Read(id)
	name, e, sid := b64([]byte(u.Name)), strconv.FormatInt(exp.Unix(), 10), b64(id)
	return name + "." + e + "." + sid + "." + sign(k.session, u.Name, e, sid, u.PasswordHash.String(), u.Role)
}

// checkSession returns the session of token if it is one this console
// made for a user of users that has not expired at now.
func (k keys) checkSession(token string, users []policy.WebUser, now time.Time) (*session, bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 4 {
		return nil, false
	}
	name, ok := unb64(parts[0])
	exp, err := strconv.ParseInt(parts[1], 10, 64)
	if !ok || err != nil || !now.Before(time.Unix(exp, 0)) {
		return nil, false
	}
	for _, u := range users {
		if u.Name != name {
			continue
		}
		want := sign(k.session, u.Name, parts[1], parts[2], u.PasswordHash.String(), u.Role)
		if !hmac.Equal([]byte(want), []byte(parts[3])) {
			return nil, false
		}
		return &session{User: u, token: token, id: parts[2], exp: time.Unix(exp, 0)}, true
	}
	return nil, false
}

// csrfToken is the token a form of the page for bearer (a session's or a
// link's token) carries: a POST without it is refused.
func (k keys) csrfToken(bearer string) string { return sign(k.csrf, bearer) }

func (k keys) checkCSRF(bearer, token string) bool {
	return bearer != "" && hmac.Equal([]byte(k.csrfToken(bearer)), []byte(token))
}

// scopeAll is the scope of a link to a recipient's whole quarantine:
// the list, each message and what may be done to it, their lists. A
// link of any other scope is for one message and names what it allows
// there (linkScopes): a digest's "release" link opens that message's
// release and nothing else.
const scopeAll = "all"

// linkScopes are the scopes of one-message links: each allows its own
// operation on its message, and viewing that message.
var linkScopes = []string{"view", "release", "allow", "block"}

// Link is what an end user's link grants: Scope (scopeAll or one of
// linkScopes, on message ID) of the quarantined mail of Rcpt, until it
// expires, as long as the recipient's links are still of generation Gen
// (state.Revocations: revoking a recipient's links raises it).
type Link struct {
	Rcpt    string // canonical address
	Scope   string
	ID      string // the message of a one-message link; "" for scopeAll
	Gen     int64
	Expires time.Time
}

// Allows reports whether l allows op on message id. The pages of the
// whole quarantine (op "list", "lists", "bulk", "revoke", id "") need
// scopeAll; a one-message link allows viewing its message and its own
// operation on it.
func (l *Link) Allows(op, id string) bool {
	if l.Scope == scopeAll {
		return true
	}
	return id != "" && id == l.ID && (op == "view" || op == l.Scope)
}

// newLink is the token of link l: what it grants, in the clear, and a
// MAC over it.
func (k keys) newLink(l Link) string {
	gen, exp := strconv.FormatInt(l.Gen, 10), strconv.FormatInt(l.Expires.Unix(), 10)
	return b64([]byte(l.Rcpt)) + "." + l.Scope + "." + b64([]byte(l.ID)) + "." + gen + "." + exp + "." +
		sign(k.link, l.Rcpt, l.Scope, l.ID, gen, exp)
}

var (
	errBadLink     = errors.New("this link is not valid")
	errExpiredLink = errors.New("this link has expired")
)

// checkLink returns what token grants at now: errBadLink when it was not
// made by this console (or was changed), errExpiredLink after its expiry.
// Whether its generation is still the recipient's is for the caller to
// ask the store.
func (k keys) checkLink(token string, now time.Time) (Link, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 6 {
		return Link{}, errBadLink
	}
	rcpt, ok1 := unb64(parts[0])
	id, ok2 := unb64(parts[2])
	gen, err1 := strconv.ParseInt(parts[3], 10, 64)
	exp, err2 := strconv.ParseInt(parts[4], 10, 64)
	if !ok1 || !ok2 || err1 != nil || err2 != nil ||
		!hmac.Equal([]byte(sign(k.link, rcpt, parts[1], id, parts[3], parts[4])), []byte(parts[5])) {
		return Link{}, errBadLink
	}
	l := Link{Rcpt: rcpt, Scope: parts[1], ID: id, Gen: gen, Expires: time.Unix(exp, 0)}
	if _, err := address.Parse(rcpt); err != nil || (l.Scope == scopeAll) != (id == "") ||
		l.Scope != scopeAll && !slices.Contains(linkScopes, l.Scope) {
		return Link{}, errBadLink
	}
	if !now.Before(l.Expires) {
		return l, errExpiredLink
	}
	return l, nil
}

// linkPath is the path of link l: its token, and the page it opens.
func (k keys) linkPath(l Link) string {
	p := "/u/" + k.newLink(l)
	switch l.Scope {
	case scopeAll:
	case "view":
		p += "/" + url.PathEscape(l.ID)
	default:
		p += "/" + url.PathEscape(l.ID) + "/" + l.Scope
	}
	return p
}

// newLinks makes the links of rcpt of the generation in force, valid for
// [web] link_ttl from now, under [web] base_url: one of scope for message
// id (scopeAll and "" for the whole quarantine).
func (c *Console) newLinks(ctx context.Context, rcpt string) (func(scope, id string) string, time.Time, error) {
	cfg := c.opts.Config()
	if a, err := address.Parse(rcpt); err == nil {
		rcpt = a
	}
	gen, err := c.opts.Revocations.LinkGeneration(ctx, rcpt)
	if err != nil {
		return nil, time.Time{}, err
	}
	exp := c.opts.Now().Add(time.Duration(cfg.Web.LinkTTL))
	base := strings.TrimSuffix(cfg.Web.BaseURL, "/")
	return func(scope, id string) string {
		return base + c.keys.linkPath(Link{Rcpt: rcpt, Scope: scope, ID: id, Gen: gen, Expires: exp})
	}, exp, nil
}

// revocations are the sessions logged out on this node before their
// expiry, until it: the store (Options.Revocations) keeps them for every
// node and restart, this for while the store does not answer.
type revocations struct {
	mu  sync.Mutex
	ids map[string]time.Time // session ID → its expiry
}

func newRevocations() *revocations { return &revocations{ids: map[string]time.Time{}} }

func (r *revocations) revoke(id string, exp, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for k, e := range r.ids {
		if !now.Before(e) {
			delete(r.ids, k)
		}
	}
	r.ids[id] = exp
}

func (r *revocations) has(id string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.ids[id]
	return ok
}

// storeCtx is the context of a look-up or a write of a revocation: ctx's
// values without its cancellation. A client that half-closes its socket
// cancels its request's context (net/http), and the store then fails
// with context.Canceled: what the store says of a session or link, and
// whether a logout is kept, must not depend on whether the client still
// listens. The store bounds each operation by its own timeout ([cluster]
// timeout); a shorter deadline here would expire on a slow but working
// PostgreSQL and have the node take it for unreachable.
func storeCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithCancel(context.WithoutCancel(ctx))
}

// errUnverified is the answer for a session whose logout cannot be ruled
// out: its cookie is good, but the store does not answer.
var errUnverified = errors.New("the state store does not answer: whether the session was logged out is unknown")

// sessionRevoked reports whether session id was logged out, here or on
// any node sharing the store. It fails closed: this node's own logouts
// are known from memory, but while the store does not answer a logout
// made on another node (or before a restart) cannot be ruled out, and
// the session is errUnverified, not valid.
func (c *Console) sessionRevoked(ctx context.Context, id string) (bool, error) {
	if c.revoked.has(id) {
		return true, nil
	}
	ctx, cancel := storeCtx(ctx)
	defer cancel()
	revoked, err := c.opts.Revocations.SessionRevoked(ctx, id)
	if err != nil {
		c.log.Error("web session not verified: "+errUnverified.Error(), "err", err)
		return false, fmt.Errorf("%w: %w", errUnverified, err)
	}
	return revoked, nil
}

// revokeSession ends session s: in this node's memory at once, and in
// the store for every node and restart, on a context of its own (a
// logout whose browser goes away at once is kept all the same).
func (c *Console) revokeSession(ctx context.Context, s *session) {
	c.revoked.revoke(s.id, s.exp, c.opts.Now())
	ctx, cancel := storeCtx(ctx)
	defer cancel()
	if err := c.opts.Revocations.RevokeSession(ctx, s.id, s.exp); err != nil {
		c.log.Error("web logout: not kept in the state store; the session ends on this node only, until its restart", "user", s.User.Name, "err", err)
	}
}
