package dmarc

import (
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages/address"
)

// Policy is what a domain owner asks receivers to do with mail that fails
// DMARC (RFC 7489 §6.3 p=, sp=; DMARCbis np=).
type Policy string

const (
	PolicyNone       Policy = "none"
	PolicyQuarantine Policy = "quarantine"
	PolicyReject     Policy = "reject"
)

// weaker is the next policy down, the one applied to failing mail that
// pct= (or DMARCbis t=y) leaves out of the sample (RFC 7489 §6.3 pct).
func (p Policy) weaker() Policy {
	switch p {
	case PolicyReject:
		return PolicyQuarantine
	default:
		return PolicyNone
	}
}

// rank orders policies by strictness, for a From field with several
// domains where the strictest of the failing ones applies (§6.6.1).
func (p Policy) rank() int {
	switch p {
	case PolicyReject:
		return 2
	case PolicyQuarantine:
		return 1
	}
	return 0
}

// Record is a parsed DMARC policy record (RFC 7489 §6.3, with the
// DMARCbis tags np, psd and t).
type Record struct {
	Policy     Policy // p=
	Subdomain  Policy // sp=, "" when absent (p= applies)
	NonExist   Policy // np= (DMARCbis), "" when absent (sp= applies)
	StrictDKIM bool   // adkim=s
	StrictSPF  bool   // aspf=s
	Pct        int    // pct=, 100 when absent
	Testing    bool   // t=y (DMARCbis): like pct=0
	PSD        byte   // psd= (DMARCbis): 'y', 'n' or 'u' (absent)
	FO         string // fo=, "0" when absent; kept for the report only
	// RUA are the aggregate report destinations that are mailto: URIs;
	// other schemes are ignored (a receiver need support only mailto,
	// §6.2).
	RUA []ReportURI
	// Fallback is set when p= or sp= was missing or invalid and the
	// record is used as p=none because it names a valid rua (§6.6.3
	// step 6).
	Fallback bool
	// Ignored lists tags whose values were invalid and were replaced by
	// their defaults (§6.3: "syntax errors in the remainder of the record
	// SHOULD be discarded in favor of default values").
	Ignored []string
}

// ReportURI is one rua destination: a mailbox and the largest report it
// takes ("!" size suffix, §6.4), 0 for no limit.
type ReportURI struct {
	Address string
	MaxSize int64
}

// Errors of ParseRecord. A record that fails with any of them is not a
// usable policy record (RFC 7489 §6.6.3).
var (
	ErrEmpty       = errors.New("empty record")
	ErrVersion     = errors.New(`record does not start with "v=DMARC1"`)
	ErrNoPolicy    = errors.New("record has no p= tag")
	ErrPolicyValue = errors.New("invalid p= or sp= value")
)

// maxRecord bounds the record text read; a TXT answer is far below it.
const maxRecord = 4096

// ParseRecord parses the text of a DMARC TXT record (its strings
// concatenated, §6.6.3). The v tag must come first with the exact,
// case-sensitive value DMARC1 (§6.4: %x44 %x4d %x41 %x52 %x43 %x31);
// tag names and keyword values compare without case, as ABNF strings do.
// Unknown tags are ignored; a bad value of a tag other than p and sp is
// replaced by the default and noted in Ignored.
func ParseRecord(s string) (*Record, error) {
	if len(s) > maxRecord {
		s = s[:maxRecord]
	}
	tags := splitTags(s)
	if len(tags) == 0 {
		return nil, ErrEmpty
	}
	if !strings.EqualFold(tags[0].name, "v") || tags[0].value != "DMARC1" {
		return nil, ErrVersion
	}
	r := &Record{Pct: 100, PSD: 'u', FO: "0"}
	var (
		pSeen, pBad, spBad, anyURI bool
		seen                       = map[string]bool{}
	)
	for _, t := range tags[1:] {
		name := strings.ToLower(t.name)
		if seen[name] {
			// A repeated tag: the first one counts.
			continue
		}
		seen[name] = true
		v := strings.ToLower(t.value)
		bad := false
		switch name {
		case "p":
			pSeen = true
			r.Policy, pBad = parsePolicy(v)
		case "sp":
			r.Subdomain, spBad = parsePolicy(v)
		case "np":
			r.NonExist, bad = parsePolicy(v)
		case "adkim", "aspf":
			strict := v == "s"
			bad = !strict && v != "r"
			if name == "adkim" {
				r.StrictDKIM = strict
			} else {
				r.StrictSPF = strict
			}
		case "pct":
			n, err := strconv.Atoi(v)
			if bad = err != nil || n < 0 || n > 100 || v[0] == '+'; !bad {
				r.Pct = n
			}
		case "t":
			r.Testing = v == "y"
			bad = v != "y" && v != "n"
		case "psd":
			if bad = len(v) != 1 || !strings.Contains("ynu", v); !bad {
				r.PSD = v[0]
			}
		case "fo":
			if bad = !validFO(v); !bad {
				r.FO = v
			}
		case "rua":
			var valid bool
			r.RUA, valid = parseRUA(t.value)
			anyURI = anyURI || valid
			bad = !valid
		case "ri":
			_, err := strconv.ParseUint(v, 10, 32)
			bad = err != nil
		case "rf", "ruf":
			// Failure reports are never sent: rf and ruf are not read.
		}
		if bad {
			r.Ignored = append(r.Ignored, name)
		}
	}
	switch {
	case !pSeen || pBad || spBad:
		// §6.6.3 step 6: a record without a valid p, or with an invalid
		// sp, is used as p=none if it names a valid rua; otherwise no
		// DMARC processing applies.
		if !anyURI {
			if !pSeen {
				return nil, ErrNoPolicy
			}
			return nil, ErrPolicyValue
		}
		r.Policy, r.Subdomain, r.NonExist, r.Fallback = PolicyNone, "", "", true
	}
	return r, nil
}

// tag is one tag=value pair of a tag list.
type tag struct{ name, value string }

// splitTags splits a tag list (RFC 7489 §6.4, as DKIM's RFC 6376 §3.2):
// pairs separated by ";", white space around names and values dropped,
// empty elements (a trailing ";") skipped. An element without "=" is kept
// with an empty value so that it still counts as a tag (and v= must be
// first).
func splitTags(s string) []tag {
	var tags []tag
	for _, part := range strings.Split(s, ";") {
		part = strings.Trim(part, " \t\r\n")
		if part == "" {
			continue
		}
		name, value, _ := strings.Cut(part, "=")
		tags = append(tags, tag{strings.Trim(name, " \t\r\n"), strings.Trim(value, " \t\r\n")})
	}
	return tags
}

func parsePolicy(v string) (Policy, bool) {
	switch p := Policy(v); p {
	case PolicyNone, PolicyQuarantine, PolicyReject:
		return p, false
	}
	// RFC 7489 §6.3 lists the three words only: OpenDMARC's acceptance
	// of any prefix ("p=n") is not followed.
	return "", true
}

// validFO checks fo= (§6.3): a colon-separated list of 0, 1, d and s.
func validFO(v string) bool {
	for _, o := range strings.Split(v, ":") {
		if o != "0" && o != "1" && o != "d" && o != "s" {
			return false
		}
	}
	return true
}

// parseRUA parses the rua list (§6.4: dmarc-uri *("," dmarc-uri), each a
// URI with an optional "!" size limit; commas and "!" inside a URI are
// %-encoded). It returns the mailto: destinations and whether any URI of
// whatever scheme was valid.
func parseRUA(v string) ([]ReportURI, bool) {
	var (
		out   []ReportURI
		valid bool
	)
	for _, item := range strings.Split(v, ",") {
		item = strings.Trim(item, " \t\r\n")
		raw, limit, hasLimit := strings.Cut(item, "!")
		u, err := url.Parse(raw)
		if err != nil || u.Scheme == "" || (u.Opaque == "" && u.Host == "" && u.Path == "") {
			continue
		}
		var size int64
		if hasLimit {
			if size, err = parseSize(limit); err != nil {
				continue
			}
		}
		valid = true
		if !strings.EqualFold(u.Scheme, "mailto") || u.Opaque == "" {
			continue
		}
		to, err := url.PathUnescape(u.Opaque)
		if err != nil {
			continue
		}
		local, domain, ok := address.Split(to)
		d, err := address.Domain(domain)
		if !ok || local == "" || err != nil || strings.ContainsAny(to, " \t\r\n<>,") {
			continue
		}
		out = append(out, ReportURI{Address: local + "@" + d, MaxSize: size})
	}
	return out, valid
}

// parseSize reads the size after "!" (§6.4: 1*DIGIT [ "k" / "m" / "g" /
// "t" ], units of 2^10, 2^20, 2^30, 2^40 bytes; no unit means bytes).
func parseSize(s string) (int64, error) {
	mult := int64(1)
	if n := len(s); n > 0 {
		switch s[n-1] {
		case 'k', 'K':
			mult = 1 << 10
		case 'm', 'M':
			mult = 1 << 20
		case 'g', 'G':
			mult = 1 << 30
		case 't', 'T':
			mult = 1 << 40
		}
		if mult > 1 {
			s = s[:n-1]
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || s[0] == '+' || n > (1<<62)/mult {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}
