// Package state is the state a gateway keeps besides its spool, behind one
// small set of interfaces: the quarantine (records and message bytes),
// the traces, the users' allow- and block-lists, the DMARC aggregate
// records, the audit log, the registry of the nodes sharing it, and the
// console's revoked sessions and links.
//
// Two implementations stand behind them, with one SQL schema (package
// sqlstore): an embedded SQLite database under data_dir for a single node,
// and PostgreSQL shared by every node of a [cluster]. What must hold for
// both is written once, as the conformance tests of package statetest,
// and run against each.
//
// Decisions that several nodes could race for are taken by a transaction
// of the store, never by a node's own memory: a quarantined message is
// released once however many nodes try at the same moment
// (Quarantine.BeginRelease), and what must be done once for the cluster
// (a day's DMARC reports, a recipient's daily digest) is done by one node
// (Claims).
//
// The spool is not here: it stays on each node's disk, and a message a
// node acknowledged is delivered by that node.
package state

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/mailgate/mailgate/stages/address"
	"github.com/mailgate/mailgate/state/trace"
)

// Errors the implementations return, wrapped with what they concern; test
// with errors.Is.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	// ErrAlreadyReleased: the quarantined message was released before;
	// the error names the queue ID of that release.
	ErrAlreadyReleased = errors.New("already released")
	// ErrReleasing: another release of the message is under way (on the
	// node the error names) and has not ended.
	ErrReleasing = errors.New("release in progress")
	// ErrNotUnderWay: EndRelease named a release the store does not have
	// under way, nor recorded as done: it was ended from elsewhere (a
	// node taken out of the cluster, mailgate cluster remove).
	ErrNotUnderWay = errors.New("release not under way")
	// ErrNotQuarantined: the operator named a message the quarantine does
	// not hold (the one node's or the cluster's).
	ErrNotQuarantined = errors.New("no such message in the quarantine")
	// ErrNotRecipient: a release named a recipient the message does not
	// have.
	ErrNotRecipient = errors.New("not a recipient of the message")
	// ErrUnavailable: the store does not answer (the PostgreSQL of a
	// cluster is away). A node says so at once while it knows the store
	// is away, rather than make each caller wait for a timeout.
	ErrUnavailable = errors.New("the state store is unreachable")
)

// Store is all the state of a gateway. Each part is safe for concurrent
// use by the goroutines of one node and by every node sharing the store.
type Store interface {
	Quarantine() Quarantine
	Traces() Traces
	Lists() Lists
	DMARC() DMARCRecords
	Audit() Audit
	Nodes() Nodes
	Revocations() Revocations
	Claims() Claims
	Close() error
}

// QuarantineRecord is what the quarantine keeps about a held message
// besides its bytes. Its JSON form is that of the file-based quarantine's
// records, so that one may become the other.
type QuarantineRecord struct {
	ID         string   `json:"id"` // queue ID given at MAIL FROM
	MessageID  string   `json:"message_id,omitempty"`
	From       string   `json:"from"` // "" is the null sender
	Rcpts      []string `json:"rcpts"`
	ClientAddr string   `json:"client_addr,omitempty"`
	ClientHelo string   `json:"client_helo,omitempty"`
	// Node is the node that quarantined the message; empty, the store's
	// own node is recorded.
	Node string    `json:"node,omitempty"`
	Time time.Time `json:"time"` // when it was quarantined; retention counts from here
	Size int64     `json:"size"` // set by Put to the bytes it stored
	// The decision: the total score, the stage that decided ("" when a
	// score threshold did), why, and under which policy.
	Score  float64 `json:"score"`
	Stage  string  `json:"stage,omitempty"`
	Reason string  `json:"reason"`
	Policy string  `json:"policy,omitempty"`
	// Verdicts are every stage result of the transaction, all phases, in
	// the order they ran.
	Verdicts []trace.Stage `json:"verdicts"`
	// ByScore is true for a hold a score threshold made, not a stage's
	// action (a virus, a file type): end users may release only these.
	ByScore bool `json:"by_score,omitempty"`
	// Releasing is the queue ID of a release under way, on ReleaseNode,
	// to ReleasingRcpts (none: every recipient not released yet);
	// Released that of the release that released the last recipient
	// (see Quarantine.BeginRelease), Releases every release done for some
	// recipients (on one node: the console's partial releases).
	Releasing      string   `json:"releasing,omitempty"`
	ReleasingRcpts []string `json:"releasing_rcpts,omitempty"`
	// ReleasingSince is when the release under way began, in the
	// cluster's store: a node leaves a fresh one it does not know alone
	// (it may be a clone's, not yet found; see quarantine.Shared).
	ReleasingSince time.Time           `json:"releasing_since,omitzero"`
	Released       string              `json:"released,omitempty"`
	ReleaseNode    string              `json:"release_node,omitempty"`
	ReleasedAt     time.Time           `json:"released_at,omitzero"`
	Releases       []QuarantineRelease `json:"releases,omitempty"`
}

// QuarantineRelease is a release of a quarantined message to some of its
// recipients: the copy queued for them.
type QuarantineRelease struct {
	QueueID string    `json:"queue_id"`
	Rcpts   []string  `json:"rcpts"`
	At      time.Time `json:"at"`
}

// Pending returns the recipients of r not released yet.
func (r *QuarantineRecord) Pending() []string {
	var out []string
	for _, a := range r.Rcpts {
		if r.Released == "" && r.ReleasedTo(a) == "" {
			out = append(out, a)
		}
	}
	return out
}

// ReleasedTo returns the queue ID of the partial release to rcpt, or "".
func (r *QuarantineRecord) ReleasedTo(rcpt string) string {
	for _, rel := range r.Releases {
		if slices.ContainsFunc(rel.Rcpts, func(a string) bool { return address.Equal(a, rcpt) }) {
			return rel.QueueID
		}
	}
	return ""
}

// ReleasedAs reports whether copyID released r, or some of its
// recipients.
func (r *QuarantineRecord) ReleasedAs(copyID string) bool {
	return r.Released == copyID || slices.ContainsFunc(r.Releases, func(rel QuarantineRelease) bool { return rel.QueueID == copyID })
}

// ReleasingTo returns the recipients of the release under way.
func (r *QuarantineRecord) ReleasingTo() []string {
	if len(r.ReleasingRcpts) > 0 {
		return r.ReleasingRcpts
	}
	return r.Pending()
}

// Begin marks r as being released as copyID to rcpts (none: every
// recipient not released yet), each recipient once, and returns the
// recipients, spelled as r has them. ErrReleasing while another release
// is under way, ErrAlreadyReleased naming a recipient released before,
// ErrNotRecipient naming an address r is not for. The caller makes it
// one decision: under a lock of its own, or in a transaction.
func (r *QuarantineRecord) Begin(copyID string, rcpts []string) ([]string, error) {
	switch {
	case r.Released != "":
		return nil, fmt.Errorf("%w as %s on %s at %s", ErrAlreadyReleased, r.Released, cmp.Or(r.ReleaseNode, "this node"), r.ReleasedAt.Format(time.RFC3339))
	case r.Releasing != "":
		return nil, fmt.Errorf("%w on %s as %s to %s", ErrReleasing, cmp.Or(r.ReleaseNode, "this node"), r.Releasing, strings.Join(r.ReleasingTo(), ", "))
	}
	to := r.Pending()
	if len(rcpts) > 0 {
		to = nil
		for _, a := range rcpts {
			i := slices.IndexFunc(r.Rcpts, func(b string) bool { return address.Equal(a, b) })
			switch {
			case i < 0:
				return nil, fmt.Errorf("%s: %w", a, ErrNotRecipient)
			case r.ReleasedTo(a) != "":
				return nil, fmt.Errorf("%w to %s as %s", ErrAlreadyReleased, a, r.ReleasedTo(a))
			case !slices.Contains(to, r.Rcpts[i]):
				to = append(to, r.Rcpts[i])
			}
		}
	}
	r.Releasing, r.ReleasingRcpts = copyID, nil
	if len(to) < len(r.Pending()) || len(r.Releases) > 0 {
		r.ReleasingRcpts = to // else a release as a whole
	}
	return to, nil
}

// Settle records the release copyID to rcpts (nil: all pending) as done
// at now.
func (r *QuarantineRecord) Settle(copyID string, rcpts []string, now time.Time) {
	if len(rcpts) == 0 && len(r.Releases) == 0 {
		r.Released, r.ReleasedAt = copyID, now
	} else {
		if len(rcpts) == 0 {
			rcpts = r.Pending()
		}
		r.Releases = append(r.Releases, QuarantineRelease{QueueID: copyID, Rcpts: rcpts, At: now})
		if len(r.Pending()) == 0 {
			r.Released, r.ReleasedAt = copyID, now
		}
	}
	r.Releasing, r.ReleasingRcpts, r.ReleasingSince = "", nil, time.Time{}
}

// QuarantineFilter selects quarantined messages; zero fields select all.
type QuarantineFilter struct {
	// From and Rcpt are looked for, without regard to case, in the
	// sender and in any recipient.
	From, Rcpt string
	// Stage selects the messages a stage decided, added to the score of,
	// or gave a verdict other than continue.
	Stage string
	// Since and Until bound the time of quarantine: Since <= t < Until.
	Since, Until time.Time
	// ReleasingOn selects the releases under way on that node: what it
	// must settle when it starts again after a crash.
	ReleasingOn string
}

// Quarantine holds messages until an operator releases or deletes them.
//
// A release, to all the recipients not released yet or to some of them,
// takes three steps, so that each recipient is released exactly once
// even when nodes crash or race: BeginRelease claims the message for one
// copy in
// the releasing node's spool (a transaction decides: of two nodes
// releasing at the same moment, one gets ErrReleasing); the node commits
// the copy to its spool; EndRelease records it as released, or, when the
// copy was not committed, frees the message for another release. A node
// that crashed between the steps lists its releases under way
// (ReleasingOn) when it starts again, and ends each by whether its spool
// holds the copy.
type Quarantine interface {
	// Put stores rec and the message read from msg as one: when it
	// returns nil both are durable, and no reader ever sees one without
	// the other. It fills in rec's Node and Time when they are empty,
	// and its Size. ErrExists if rec.ID is held already.
	Put(ctx context.Context, rec *QuarantineRecord, msg io.Reader) error
	Get(ctx context.Context, id string) (*QuarantineRecord, error)
	// List returns the records f selects, oldest first.
	List(ctx context.Context, f QuarantineFilter) ([]*QuarantineRecord, error)
	// Message returns the bytes of message id. They are read a part at
	// a time, so a preview of a large message costs little memory.
	Message(ctx context.Context, id string) (io.ReadCloser, error)
	// Delete removes the message and its record.
	Delete(ctx context.Context, id string) error
	// BeginRelease claims message id for a release by node as the spool
	// copy copyID to rcpts (none: every recipient not released yet) and
	// returns its record, whose ReleasingTo are the copy's recipients.
	// It fails as QuarantineRecord.Begin does: ErrAlreadyReleased for a
	// recipient released, ErrReleasing while another release of the
	// message is under way (one at a time, whatever its recipients),
	// ErrNotRecipient.
	BeginRelease(ctx context.Context, id, node, copyID string, rcpts []string) (*QuarantineRecord, error)
	// EndRelease ends the release copyID of message id: queued, its
	// recipients are released as copyID (the message, with its last
	// one); not queued, they may be released again.
	EndRelease(ctx context.Context, id, copyID string, queued bool) error
}

// TraceFilter selects trace events; zero fields select all.
type TraceFilter struct {
	Since, Until time.Time // Since <= time < Until
	// From and Rcpt are looked for, without regard to case, in the
	// sender and in any recipient of an event.
	From, Rcpt string
	Event      string // connect, data, attempt, …: as trace.Event.Event
	Action     string // the decision or outcome, as trace.Event.Action
	Node       string // the node that recorded the event
	Limit      int    // at most this many, the newest; 0: 1000
}

// Traces keeps the story of every message: what each stage found, the
// decision, each delivery attempt (see package trace for the events).
type Traces interface {
	// Append records events as the store's node. Events come in
	// batches so that a busy node writes in few transactions. An event
	// stored before, the same in every field, is not stored again, so a
	// batch may be sent again (after a crash, by an import run twice).
	Append(ctx context.Context, events ...trace.Event) error
	// Find returns the events of the message with queue ID or
	// Message-ID id (with or without its angle brackets), and of the
	// messages linked to it by Related (a release's copy, a DSN),
	// oldest first.
	Find(ctx context.Context, id string) ([]trace.Event, error)
	// Search returns the events f selects, newest first.
	Search(ctx context.Context, f TraceFilter) ([]trace.Event, error)
	// Expire deletes the events older than before and returns how many.
	Expire(ctx context.Context, before time.Time) (int64, error)
}

// ListKind says what a list entry does to mail from the sender it names.
type ListKind string

const (
	Allow ListKind = "allow" // accept without running the spam stages
	Block ListKind = "block" // reject; a block wins over an allow
)

// ListEntry is one entry of a user's allow- or block-list.
type ListEntry struct {
	// Owner is the recipient whose list it is, an address. Owner and
	// Sender are stored as CanonicalEntry makes them.
	Owner string
	Kind  ListKind
	// Sender is what the entry matches: an address, a domain (any
	// address at it) or "*.domain" (any address at a subdomain), as in
	// [policy.allow] senders.
	Sender string
	Added  time.Time
	By     string // who added it: the user, an admin, an import
}

// Lists keeps the users' own allow- and block-lists (the site's lists
// are in the config). MatchList applies one.
type Lists interface {
	// Add adds e, or updates Added and By of the same entry.
	Add(ctx context.Context, e ListEntry) error
	// Remove removes owner's entry of kind for sender; ErrNotFound if
	// there is none.
	Remove(ctx context.Context, owner string, kind ListKind, sender string) error
	// Entries returns owner's entries, or every user's for "", in
	// order of owner, kind and sender.
	Entries(ctx context.Context, owner string) ([]ListEntry, error)
}

// DMARCRecord is one DMARC evaluation kept for the aggregate report of
// its policy domain (RFC 7489 §7.2). What an evaluation holds is the
// business of the dmarc stage: the store keeps Row as given.
type DMARCRecord struct {
	Time   time.Time
	Domain string // the policy domain: whose report it goes into
	Row    []byte // the evaluation, as the dmarc stage encodes it
	// Key, if set, names the record among those of its node: a record
	// added again with the same key is stored once, so that a node that
	// stopped before it noted what it had sent may send it again.
	Key string
}

// DMARCRecords keeps DMARC evaluations until the day's reports are sent
// (the node that sends them claims the day: Claims). Days are UTC days.
type DMARCRecords interface {
	Add(ctx context.Context, r DMARCRecord) error
	// Day returns the records of the day of t, in the order added.
	Day(ctx context.Context, t time.Time) ([]DMARCRecord, error)
	// Expire deletes the records of the days before the day of t.
	Expire(ctx context.Context, t time.Time) error
}

// Claims decide which node does a thing that must be done once for all
// the nodes sharing the store, such as a recipient's daily digest: a
// transaction decides, whoever asks at the same moment.
type Claims interface {
	// Claim reports whether node is the one to do what key names: true
	// for the first node to claim it, and again for that node each time
	// it asks (a node that stopped between its claim and the work does
	// it when it starts again); false for every other node.
	Claim(ctx context.Context, key, node string) (bool, error)
	// Expire forgets the claims made before t.
	Expire(ctx context.Context, t time.Time) error
}

// AuditEntry is one thing an operator or a user did.
type AuditEntry struct {
	Time   time.Time
	Node   string // where it was done; empty, the store's node is recorded
	Actor  string // who: a console user, "cli", "admin-api"
	Action string // what: quarantine.release, list.add, …
	Target string // to what: a queue ID, a list entry
	Detail string
}

// AuditFilter selects audit entries; zero fields select all.
type AuditFilter struct {
	Since, Until          time.Time // Since <= time < Until
	Actor, Action, Target string    // exact
	Limit                 int       // at most this many, the newest; 0: 1000
}

// Audit is the log of what was done to the gateway's state.
type Audit interface {
	Record(ctx context.Context, e AuditEntry) error
	// Entries returns the entries f selects, newest first.
	Entries(ctx context.Context, f AuditFilter) ([]AuditEntry, error)
}

// Revocations ends the web console's credentials before their time. A
// session cookie and an end user's link are signed and carry their own
// expiry, so a node can check one alone; what ended one early is kept
// here, where a restarted node and every other node of a cluster find it.
type Revocations interface {
	// RevokeSession ends the session id. It is kept until exp, when
	// the session ends by itself; the revocations past their expiry are
	// deleted on the way.
	RevokeSession(ctx context.Context, id string, exp time.Time) error
	// SessionRevoked reports whether the session id was revoked.
	SessionRevoked(ctx context.Context, id string) (bool, error)
	// LinkGeneration returns the generation of the links of rcpt (an
	// address, kept by its address.Key): 0 until RevokeLinks. A link names the
	// generation it was made in; one of an older generation is refused.
	LinkGeneration(ctx context.Context, rcpt string) (int64, error)
	// RevokeLinks ends every link of rcpt made so far: it raises the
	// generation and returns the new one. Two calls at the same moment
	// from two nodes raise it twice.
	RevokeLinks(ctx context.Context, rcpt string) (int64, error)
}

// Node is a gateway node as it last reported itself.
type Node struct {
	Name       string
	Version    string
	ConfigHash string // of the config it runs: nodes of a cluster should agree
	Health     string // "ok", or what is wrong
	Started    time.Time
	Heartbeat  time.Time // when it last reported
	// Stale and ConfigDiffers are set by NodeStatus, not stored.
	Stale         bool // no heartbeat for longer than the allowed gap
	ConfigDiffers bool // its config is not the one most live nodes run
}

// Nodes is the registry of the nodes sharing the store: each node calls
// Heartbeat every few seconds. Heartbeats carry the node's own clock and
// are judged by the reader's (NodeStatus), so the nodes' clocks must
// agree within the allowed gap, as NTP keeps them.
type Nodes interface {
	// Heartbeat records n, replacing what was reported under its name
	// before, and returns that (the zero Node if nothing was), read in
	// the same transaction: of two processes reporting under one name
	// at the same moment, one reads what the other wrote (NameWatch).
	Heartbeat(ctx context.Context, n Node) (was Node, err error)
	// List returns every node that ever reported, by name; NodeStatus
	// tells the live from the stale.
	List(ctx context.Context) ([]Node, error)
	// Remove forgets a node taken out of the cluster.
	Remove(ctx context.Context, name string) error
}
