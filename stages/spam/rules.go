package spam

import (
	"errors"
	"fmt"
	"mime"
	"net/mail"
	"regexp"
	"strings"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/address"
)

// gtube is the Generic Test for Unsolicited Bulk Email: a message that
// carries it scores as spam whatever else it holds, so that an admin can
// check the whole chain end to end.
const gtube = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

const gtubeScore = 1000

// message is what a rule looks at.
type message struct {
	*content
	scan    scanText // the text, for body rules
	results []stages.Result
}

// rule is one scoring rule, from the config or built in.
type rule struct {
	name  string
	score float64
	match func(*message) bool
}

// compile turns a configured rule into a rule. It takes exactly one of
// header, body, uri and result.
func compile(rc Rule) (rule, error) {
	set := 0
	for _, s := range []string{rc.Header, rc.Body, rc.URI, rc.Result} {
		if s != "" {
			set++
		}
	}
	if set != 1 {
		return rule{}, errors.New("set exactly one of header, body, uri or result")
	}
	if rc.Pattern != "" && rc.Header == "" {
		return rule{}, errors.New("pattern goes with header; body and uri take their regexp as value")
	}
	r := rule{name: rc.Name, score: rc.Score}
	switch {
	case rc.Header != "":
		m, err := headerMatch(rc.Header, rc.Pattern)
		if err != nil {
			return rule{}, err
		}
		r.match = m
	case rc.Body != "":
		re, err := regexp.Compile(rc.Body)
		if err != nil {
			return rule{}, fmt.Errorf("body: %w", err)
		}
		tm := newTextMatcher(re)
		r.match = func(m *message) bool { return tm.match(m.scan) }
	case rc.URI != "":
		re, err := regexp.Compile(rc.URI)
		if err != nil {
			return rule{}, fmt.Errorf("uri: %w", err)
		}
		r.match = func(m *message) bool {
			for _, u := range m.uris {
				if re.MatchString(u) {
					return true
				}
			}
			return false
		}
	case rc.Result != "":
		m, err := resultMatch(rc.Result)
		if err != nil {
			return rule{}, err
		}
		r.match = m
	}
	if rc.Negate {
		match := r.match
		r.match = func(m *message) bool { return !match(m) }
	}
	return r, nil
}

// headerMatch matches the decoded values of field name against pattern;
// without a pattern it matches when the field is present. The name "ALL"
// stands for the whole header, one "Name: value" line per field.
func headerMatch(name, pattern string) (func(*message) bool, error) {
	if strings.ContainsAny(name, " \t:") {
		return nil, fmt.Errorf("header: unexpected %q; expect a field name such as \"Subject\", or \"ALL\"", name)
	}
	var re *regexp.Regexp
	if pattern != "" {
		var err error
		if re, err = regexp.Compile(pattern); err != nil {
			return nil, fmt.Errorf("pattern: %w", err)
		}
	}
	if name == "ALL" {
		if re == nil {
			return nil, errors.New(`pattern: header = "ALL" needs a pattern`)
		}
		return func(m *message) bool { return re.MatchString(m.allHeader) }, nil
	}
	return func(m *message) bool {
		vs := m.values(name)
		if re == nil {
			return len(vs) > 0
		}
		for _, v := range vs {
			if re.MatchString(v) {
				return true
			}
		}
		return false
	}, nil
}

// resultMatch matches "stage:result": an earlier stage, named by kind or by
// instance name, that reported that result word. Stages that broke are
// left out: their result says nothing about the message.
func resultMatch(spec string) (func(*message) bool, error) {
	stage, word, ok := strings.Cut(spec, ":")
	if !ok || stage == "" || word == "" {
		return nil, fmt.Errorf("result: unexpected %q; expect \"stage:result\" such as \"spf:fail\"", spec)
	}
	return func(m *message) bool {
		for _, r := range m.results {
			if !r.Errored && (strings.EqualFold(r.Kind, stage) || strings.EqualFold(r.Stage, stage)) &&
				strings.EqualFold(r.Result, word) {
				return true
			}
		}
		return false
	}, nil
}

// defaultRules is the built-in rule set: cheap signs that each say a little
// and together say more. Scores are modest, so that a clean message from a
// careful sender scores 0 and no single rule reaches the default spam_score.
func defaultRules() []Rule {
	return []Rule{
		{Name: "MISSING_DATE", Score: 1, Header: "Date", Negate: true},
		{Name: "MISSING_MID", Score: 0.5, Header: "Message-ID", Negate: true},
		{Name: "MISSING_FROM", Score: 1, Header: "From", Negate: true},
		{Name: "MISSING_SUBJECT", Score: 0.5, Header: "Subject", Negate: true},
		// At least eight capitals and no lower-case letter.
		{Name: "SUBJ_ALL_CAPS", Score: 1.5, Header: "Subject", Pattern: `^[^\p{Ll}]*(?:\p{Lu}[^\p{Ll}]*){8,}$`},
		{Name: "SUBJ_EXCLAIM", Score: 1, Header: "Subject", Pattern: `!{2,}`},
		{Name: "BODY_EXCLAIM", Score: 0.5, Body: `!{4,}`},
		{Name: "BODY_FREE_MONEY", Score: 2, Body: `(?i)\b(?:free (?:money|cash|gift|access)|100% free|risk[- ]free|` +
			`no credit checks?|cash bonus|double your (?:money|income)|earn \$?[\d,.]+ (?:per|a) (?:day|week)|` +
			`act now|limited[- ]time offer|once in a lifetime)\b`},
		{Name: "BODY_PRIZE", Score: 2, Body: `(?i)\b(?:you(?:'ve| have) (?:been selected|won)|claim your (?:prize|reward|winnings)|` +
			`winning notification|lottery winner|unclaimed (?:funds|prize)|million (?:dollars|usd|euros?))\b`},
		{Name: "URI_IP_HOST", Score: 1.5, URI: `(?i)^[a-z]+://(?:[^/?#@]*@)?(?:\d{1,3}(?:\.\d{1,3}){3}|\[[0-9a-f:.]+\])(?::\d+)?(?:[/?#\\]|$)`},
		{Name: "URI_SHORTENER", Score: 0.3, URI: `(?i)^[a-z]+://(?:www\.)?(?:bit\.ly|tinyurl\.com|t\.co|goo\.gl|ow\.ly|is\.gd|cutt\.ly|rebrand\.ly)(?:[/:?#\\]|$)`},
	}
}

// defaultChecks are the built-in rules that a regular expression cannot say.
func defaultChecks() []rule {
	return []rule{
		{name: "HTML_ONLY", score: 1, match: func(m *message) bool { return m.html && !m.plain }},
		{name: "MIME_MALFORMED", score: 1, match: func(m *message) bool { return m.malformed }},
		{name: "FROM_NAME_ADDR_MISMATCH", score: 2, match: fromNameMismatch},
	}
}

// nameAddr finds an address in a display name.
var nameAddr = regexp.MustCompile(`[\w.+-]+@((?:[\w-]+\.)+[\w-]+)`)

// fromNameMismatch is the "PayPal <service@paypal.example>" <x@elsewhere>
// trick: a From display name showing an address whose domain is not the
// domain the mail is really from.
func fromNameMismatch(m *message) bool {
	raw := m.raw("From")
	if raw == "" {
		return false
	}
	p := mail.AddressParser{WordDecoder: &mime.WordDecoder{CharsetReader: charsetReader}}
	a, err := p.Parse(raw)
	if err != nil {
		return false
	}
	shown := nameAddr.FindStringSubmatch(a.Name)
	if shown == nil {
		return false
	}
	_, from, _ := address.Split(a.Address)
	return !sameDomain(shown[1], from)
}

// sameDomain compares two mail domains by registrable domain, so that
// "example.com" and "mail.example.com" are the same sender.
func sameDomain(a, b string) bool {
	a, b = strings.ToLower(a), strings.ToLower(b)
	if da := uriDomain(a); da != "" {
		a = da
	}
	if db := uriDomain(b); db != "" {
		b = db
	}
	return a == b
}
