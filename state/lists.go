package state

import (
	"fmt"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// CanonicalEntry returns e with Owner and Sender as keys (address.Key:
// canonical, ASCII letters in lower case), or an error naming what is
// wrong: Owner must be an address; Sender an address, a domain, "@domain"
// or "*.domain"; Kind allow or block. Every Lists implementation stores
// entries in this form, and looks owners up by their Key, so that one
// entry has one spelling and a mailbox is the same one it is for
// address.Equal.
func CanonicalEntry(e ListEntry) (ListEntry, error) {
	owner, err := address.Parse(e.Owner)
	if err != nil {
		return e, fmt.Errorf("list owner %q: %w", e.Owner, err)
	}
	if e.Kind != Allow && e.Kind != Block {
		return e, fmt.Errorf("list kind: unexpected %q; expect allow or block", e.Kind)
	}
	sender, err := canonicalSender(e.Sender)
	if err != nil {
		return e, fmt.Errorf("list entry %q: %w; expect an address, a domain, \"@domain\" or \"*.domain\"", e.Sender, err)
	}
	e.Owner, e.Sender = address.Key(owner), address.Key(sender)
	return e, nil
}

func canonicalSender(s string) (string, error) {
	if local, _, ok := address.Split(s); ok && local != "" {
		return address.Parse(s)
	}
	return address.Pattern(strings.TrimPrefix(s, "@"))
}

// MatchList returns the entry of entries (one owner's) that decides for
// mail from sender, a canonical address: a block entry wins over an allow
// entry, as in the site's lists. Entries match as [policy.allow] senders
// do: an address the same mailbox without regard to case, a domain any
// address at it, "*.domain" any address at a subdomain. nil when none
// matches; the null sender matches nothing.
func MatchList(entries []ListEntry, sender string) *ListEntry {
	domain := address.DomainOf(sender)
	if domain == "" {
		return nil
	}
	var allow *ListEntry
	for i := range entries {
		e := &entries[i]
		var hit bool
		if local, _, ok := address.Split(e.Sender); ok && local != "" {
			hit = address.Equal(e.Sender, sender)
		} else {
			hit = address.Match(e.Sender, domain)
		}
		switch {
		case !hit:
		case e.Kind == Block:
			return e
		case allow == nil:
			allow = e
		}
	}
	return allow
}
