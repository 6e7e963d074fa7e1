package console

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state"
)

type listsData struct {
	Owner   string
	Entries []state.ListEntry
	Problem string
}

// lists shows the users' allow- and block-lists, or one user's.
func (c *Console) lists(w http.ResponseWriter, r *http.Request, v view) {
	d := listsData{Owner: strings.TrimSpace(r.URL.Query().Get("owner"))}
	if v.Rcpt != "" {
		d.Owner = v.Rcpt
	}
	owner := d.Owner
	if owner != "" {
		e, err := state.CanonicalEntry(state.ListEntry{Owner: owner, Kind: state.Allow, Sender: "example.test"})
		if err != nil {
			d.Problem = "Not an address: " + owner
		}
		owner = e.Owner
	}
	if d.Problem == "" {
		var err error
		if d.Entries, err = c.opts.Lists.Entries(r.Context(), owner); err != nil {
			d.Problem = c.unreadable("The lists", err)
		}
	}
	v.Title, v.Nav = "Allow- and block-lists", "lists"
	if v.Rcpt != "" {
		v.Title = "Your allow- and block-lists"
	}
	v.Data = d
	c.render(w, http.StatusOK, "lists", v)
}

// listChange adds or removes an entry: an admin's for any owner, an end
// user's for themselves.
func (c *Console) listChange(w http.ResponseWriter, r *http.Request, v view) {
	owner, kind, sender := strings.TrimSpace(r.PostFormValue("owner")), state.ListKind(r.PostFormValue("kind")), strings.TrimSpace(r.PostFormValue("sender"))
	back := "/lists?owner=" + owner
	if v.Rcpt != "" {
		owner, back = v.Rcpt, "/u/"+v.Token+"/lists"
	}
	var err error
	var line string
	switch r.PostFormValue("op") {
	case "add":
		err = c.list(r.Context(), v, owner, kind, sender)
		line = "Added " + sender + " to the " + string(kind) + "-list of " + owner + "."
	case "remove":
		if _, cerr := state.CanonicalEntry(state.ListEntry{Owner: owner, Kind: kind, Sender: sender}); cerr != nil {
			err = refusef("%v", cerr)
			break
		}
		err = c.opts.Lists.Remove(r.Context(), owner, kind, sender)
		if errors.Is(err, state.ErrNotFound) {
			err = refusef("%s is not on the %s-list of %s", sender, kind, owner)
		}
		if err == nil {
			c.audit(r.Context(), v, "list.remove", owner, string(kind)+" "+sender)
		}
		line = "Removed " + sender + " from the " + string(kind) + "-list of " + owner + "."
	default:
		err = refusef("no such operation")
	}
	if err != nil {
		c.opFailed(w, r, v, back, owner, err)
		return
	}
	c.done(w, v, back, line)
}

// ListCache is a state.Lists that remembers each owner's entries for a
// while: the gateway asks at every RCPT, and most recipients have no
// list at all. A change made through it is seen at once by the next
// message; one made by another node of a cluster within ttl.
type ListCache struct {
	state.Lists
	ttl time.Duration
	now func() time.Time

	mu     sync.Mutex
	owners map[string]cachedEntries
}

type cachedEntries struct {
	entries []state.ListEntry
	until   time.Time
}

// maxCachedOwners bounds the cache; when full it starts over.
const maxCachedOwners = 100_000

// NewListCache caches the entries of l for ttl.
func NewListCache(l state.Lists, ttl time.Duration) *ListCache {
	return &ListCache{Lists: l, ttl: ttl, now: time.Now, owners: map[string]cachedEntries{}}
}

// Entries returns owner's entries, from the cache while they are fresh;
// "" (every owner's) is never cached. The cache is by address.Key, as the
// store keeps owners.
//
// When the store fails (a cluster's PostgreSQL away), the entries last
// read are returned, however old, so that a recipient's block or allow
// holds through an outage; with none, the error, and the pipeline
// checks no list for that recipient (the lists fail open: mail flows).
func (c *ListCache) Entries(ctx context.Context, owner string) ([]state.ListEntry, error) {
	if owner == "" {
		return c.Lists.Entries(ctx, owner)
	}
	key := address.Key(owner)
	now := c.now()
	c.mu.Lock()
	e, ok := c.owners[key]
	c.mu.Unlock()
	if ok && now.Before(e.until) {
		return e.entries, nil
	}
	entries, err := c.Lists.Entries(ctx, owner)
	if err != nil {
		if ok {
			return e.entries, nil
		}
		return nil, err
	}
	c.mu.Lock()
	if len(c.owners) >= maxCachedOwners {
		clear(c.owners)
	}
	c.owners[key] = cachedEntries{entries: entries, until: now.Add(c.ttl)}
	c.mu.Unlock()
	return entries, nil
}

func (c *ListCache) forget(owner string) {
	c.mu.Lock()
	delete(c.owners, address.Key(owner))
	c.mu.Unlock()
}

// Add adds e and forgets what was cached of its owner. What failed
// changed nothing: the cache is kept (see Entries).
func (c *ListCache) Add(ctx context.Context, e state.ListEntry) error {
	err := c.Lists.Add(ctx, e)
	if err == nil {
		c.forget(e.Owner)
	}
	return err
}

// Remove removes an entry and forgets what was cached of its owner.
func (c *ListCache) Remove(ctx context.Context, owner string, kind state.ListKind, sender string) error {
	err := c.Lists.Remove(ctx, owner, kind, sender)
	if err == nil {
		c.forget(owner)
	}
	return err
}
