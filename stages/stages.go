// Package stages is the filter contract shared by the engine and every filter,
// built in or third-party: the Stage a pipeline runs, the Transaction it sees,
// the Verdict it returns and the Edits it asks for; with them the rules an
// edit must follow (field.go: header fields, envelope addresses) and the one
// decoder of a stage's [stage.config] (JSONConfig).
//
// A stage reports what it found; policy decides what to do. A stage's error
// means the stage broke (timeout, crash, scanner down), never "the message is
// bad". This package depends on nothing of the engine, so a filter needs
// nothing but this package (and plugins/sdk to run out of process).
package stages

import (
	"context"
	"fmt"
	"strings"
	"time"
)

// Phase is a point of the SMTP transaction at which a stage can run. Phases
// form a bitmask so a stage can declare several.
type Phase uint8

const (
	Connect Phase = 1 << iota // the client connected; Client is known
	Helo                      // HELO/EHLO; Client.Helo is known
	Mail                      // MAIL FROM; From is known
	Rcpt                      // each RCPT TO; the last of Rcpts is the one asked about
	Data                      // end of DATA; Header and Body are known

	AllPhases = Connect | Helo | Mail | Rcpt | Data
)

var phaseNames = [...]string{"connect", "helo", "mail", "rcpt", "data"}

// String returns the phases as "connect|mail", or "none".
func (p Phase) String() string {
	var names []string
	for i, n := range phaseNames {
		if p&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, "|")
}

// Has reports whether p includes every phase of q.
func (p Phase) Has(q Phase) bool { return p&q == q }

// ParsePhase parses one phase name.
func ParsePhase(s string) (Phase, error) {
	for i, n := range phaseNames {
		if s == n {
			return 1 << i, nil
		}
	}
	return 0, fmt.Errorf("unexpected phase %q; expect connect, helo, mail, rcpt or data", s)
}

// Action is what a verdict asks for. The order of the constants is the merge
// order: a higher action wins over a lower one, except Accept, which
// short-circuits the chain (an allow-list hit).
type Action uint8

const (
	Continue   Action = iota // nothing to say; go on
	Tag                      // deliver, marked (subject tag, headers)
	Quarantine               // keep in the quarantine, do not deliver
	TempFail                 // 4xx: try again later
	Reject                   // 5xx: refuse
	Accept                   // deliver without running the rest of the chain
)

var actionNames = [...]string{"continue", "tag", "quarantine", "tempfail", "reject", "accept"}

func (a Action) String() string {
	if int(a) < len(actionNames) {
		return actionNames[a]
	}
	return fmt.Sprintf("action(%d)", a)
}

// ParseAction parses an action name as written in config and verdict dumps.
func ParseAction(s string) (Action, error) {
	for i, n := range actionNames {
		if s == n {
			return Action(i), nil
		}
	}
	return 0, fmt.Errorf("unexpected action %q; expect continue, tag, quarantine, tempfail, reject or accept", s)
}

// MarshalText and UnmarshalText let actions appear by name in JSON and TOML.
func (a Action) MarshalText() ([]byte, error) { return []byte(a.String()), nil }

func (a *Action) UnmarshalText(b []byte) error {
	v, err := ParseAction(string(b))
	*a = v
	return err
}

// Reply is an SMTP reply a stage proposes to the client. Text must be generic:
// it reaches the sender, so it never carries internal detail.
type Reply struct {
	Code     int    // 3-digit SMTP code, e.g. 550
	Enhanced [3]int // RFC 3463 enhanced status code, e.g. {5, 7, 1}; zero means derive from Code
	Text     string // one line of human text
}

func (r Reply) String() string {
	e := r.Enhanced
	if e == [3]int{} {
		e = [3]int{r.Code / 100, 0, 0}
	}
	return fmt.Sprintf("%d %d.%d.%d %s", r.Code, e[0], e[1], e[2], r.Text)
}

// Verdict is what a stage found for one phase of one transaction.
type Verdict struct {
	Action Action  `json:"action"`
	Score  float64 `json:"score,omitempty"`  // added to the message's total
	Result string  `json:"result,omitempty"` // stage-specific result word: spf "softfail", av "infected", …
	// Reply is the reply when this verdict ends the transaction with a
	// reject or a tempfail: by its own Action, or by a result mapping
	// ([stage.results]) an admin wrote for Result. So a stage gives the
	// reply a result deserves whatever its own action, and the pipeline
	// gives it the class (4xx, 5xx) of the action taken. Generic text: it
	// reaches the client. nil: the policy's default.
	Reply  *Reply `json:"reply,omitempty"`
	Reason string `json:"reason,omitempty"` // detail for logs and traces only, never for the client
	Edits  []Edit `json:"edits,omitempty"`  // changes to apply to the message, in order
}

// EditOp names one kind of change to a message.
type EditOp uint8

const (
	HeaderAdd    EditOp = iota + 1 // append field Name: Value to the header
	HeaderInsert                   // insert field Name: Value before position Index (0 = top)
	HeaderChange                   // set the Index-th (1-based) field called Name to Value; empty Value deletes it
	HeaderDelete                   // delete every field called Name (Index 0) or only the Index-th (1-based)
	SubjectTag                     // prefix the Subject with Value unless it already starts with it
	RcptAdd                        // add envelope recipient Value
	RcptDelete                     // remove envelope recipient Value
	SenderChange                   // set the envelope sender to Value
	BodyReplace                    // replace the body (after the header) with Body
)

var editOpNames = [...]string{"", "header_add", "header_insert", "header_change", "header_delete",
	"subject_tag", "rcpt_add", "rcpt_delete", "sender_change", "body_replace"}

func (o EditOp) String() string {
	if int(o) < len(editOpNames) && o != 0 {
		return editOpNames[o]
	}
	return fmt.Sprintf("edit(%d)", o)
}

func (o EditOp) MarshalText() ([]byte, error) { return []byte(o.String()), nil }

func (o *EditOp) UnmarshalText(b []byte) error {
	for i, n := range editOpNames {
		if i > 0 && string(b) == n {
			*o = EditOp(i)
			return nil
		}
	}
	return fmt.Errorf("unexpected edit %q", b)
}

// Edit is one change a stage asks for. Edits are applied by the pipeline in
// chain order, so later stages see the edits of earlier ones.
type Edit struct {
	Op    EditOp `json:"op"`
	Name  string `json:"name,omitempty"`  // header field name
	Value string `json:"value,omitempty"` // header value (unfolded is fine; it is folded when written), tag, or address
	Index int    `json:"index,omitempty"` // see EditOp
	Body  []byte `json:"body,omitempty"`  // new body for BodyReplace, CRLF line ends
}

// Needs says which parts of a message a stage reads, so the engine sends no
// more than that across the process boundary.
type Needs uint8

const (
	NeedEnvelope Needs = 1 << iota // client, HELO, sender, recipients (always sent)
	NeedHeader                     // the header fields
	NeedBody                       // the body
	NeedResults                    // the verdicts of the stages before it (spam scoring)
)

// Info describes a stage: what the kind is and what it needs.
type Info struct {
	Kind    string `json:"kind"`
	Version string `json:"version,omitempty"`
	Phases  Phase  `json:"phases"`
	Needs   Needs  `json:"needs"`
	// Edits is true for a stage that may return Edits. Stages that do not
	// edit are independent of each other and run concurrently; editing
	// stages run one after the other in config order.
	Edits bool `json:"edits,omitempty"`
	// Seals is true for a stage whose edit seals the message as it
	// leaves, such as a DKIM signature: any later change would break the
	// seal. The pipeline runs sealing stages at data only, after every
	// other stage and after the policy's own edits (subject tag, tag
	// headers), in config order, whenever the message is to be delivered
	// or quarantined: after an Accept too. So what they sign is what
	// leaves.
	Seals bool `json:"seals,omitempty"`
	// Results are the result words the stage's verdicts carry (Verdict.
	// Result). A config maps only these to actions ([stage.results],
	// results of [[policy.override]]): a mapping of another word, a typo,
	// would never apply, so the gateway refuses it. A stage that declares
	// none can have no mappings. A kind reports each word with its default
	// action and leaves the choice of another to [stage.results], rather
	// than keys of its own that map its words to actions.
	Results []string `json:"results,omitempty"`
}

// Stage is one configured filter instance as the pipeline runs it.
type Stage interface {
	Name() string // instance name from the config: logs, metrics and errors use it
	Info() Info
	// Run is called once per declared phase (and per recipient for Rcpt).
	// The error return means the stage broke; verdicts describe the mail.
	Run(ctx context.Context, p Phase, tx *Transaction) (Verdict, error)
}

// Filter is what a kind implements: a Stage without an instance name. The
// engine gives it a name; plugins/sdk serves it out of process.
type Filter interface {
	Info() Info
	Run(ctx context.Context, p Phase, tx *Transaction) (Verdict, error)
}

// Closer is implemented by filters that hold resources (connections, caches).
type Closer interface {
	Close() error
}

// Config is a stage's [stage.config] block, handed to the kind's factory.
// Decode fails on keys the target struct does not have.
type Config interface {
	Decode(v any) error
}

// Env is what the engine lends a filter at construction: the things that
// belong to the gateway rather than to one stage.
type Env struct {
	Hostname   string   // the gateway's own name, as in Received and Authentication-Results
	DNSServers []string // resolvers from [dns] servers, host:port; empty means /etc/resolv.conf
	// DNSTimeout is [dns] timeout, the bound on one DNS query to one
	// server. Stages that look names up use it unless their own config
	// overrides it; zero means not set, and a stage then uses its own
	// default.
	DNSTimeout time.Duration
	DataDir    string
	// Redis is the Redis the nodes of a [cluster] share, for a stage
	// whose state every node must see (greylisting's triplets); its zero
	// value keeps such state under DataDir.
	Redis Redis
	// Shared is set on a node of a [cluster] whose nodes share their
	// state in PostgreSQL. What a stage must do once for the whole
	// cluster it leaves to the gateway, which collects each node's part
	// from DataDir: the dmarc stage records its evaluations as on one
	// node, and sends the reports of the days the gateway hands it
	// (stages/dmarc/README.md).
	Shared bool
}

// Redis is [cluster] redis and the settings of its client (package
// stages/redisconn opens it).
type Redis struct {
	URL                     string // "" on one node
	Timeout, ConnectTimeout time.Duration
	MaxConns                int
}

// Factory builds a kind's filter from its config block.
type Factory func(env Env, cfg Config) (Filter, error)

// Named gives a filter an instance name, making it a Stage.
func Named(name string, f Filter) Stage { return named{name, f} }

type named struct {
	name string
	Filter
}

func (n named) Name() string { return n.name }

// Unwrap returns the filter behind a Stage made by Named.
func (n named) Unwrap() Filter { return n.Filter }
