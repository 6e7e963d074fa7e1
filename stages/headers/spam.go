package headers

import (
	"math"
	"regexp"
	"strconv"
	"strings"

	"github.com/mailgate/mailgate/stages"
)

const (
	// maxTests bounds the tests listed in the status field.
	maxTests = 100
	// foldAt is where the status field's test list is folded (RFC 5322
	// §2.1.1: lines SHOULD be no more than 78 characters).
	foldAt = 78
)

// ruleHit is a "NAME=score" word in a spam stage's reason, as in
// "GTUBE=1000,MISSING_DATE=0.5": SpamAssassin's rule names are upper case.
var ruleHit = regexp.MustCompile(`^[A-Z_][A-Za-z0-9_]{0,63}=-?[0-9]{1,6}(\.[0-9]{1,4})?$`)

// addSpamHeaders replaces the score fields with <prefix>Score: <total> and
// <prefix>Status: Yes|No, score=<total> required=<threshold> tests=<hits>,
// in SpamAssassin's format that mail clients and filters already read.
// Fields of those names from outside are removed: only this gateway says
// what the score is.
func (f *Headers) addSpamHeaders(e *editor, results []stages.Result) {
	e.step = "spam_headers"
	score, status := f.spamPrefix+"Score", f.spamPrefix+"Status"
	e.removeNames(func(n string) bool { return strings.EqualFold(n, score) || strings.EqualFold(n, status) })
	total := totalScore(results)
	e.add(score, formatScore(total))

	yes := "No"
	if total >= f.threshold {
		yes = "Yes"
	}
	v := yes + ", score=" + formatScore(total) + " required=" + formatScore(f.threshold) + " tests="
	hits := tests(results)
	if len(hits) == 0 {
		v += "none"
	}
	// Fold after a comma when the next test would pass foldAt: the list
	// has no white space of its own to fold at.
	line := len(status) + len(": ") + len(v)
	for i, h := range hits {
		if i > 0 {
			v += ","
			line++
			if line+len(h) > foldAt {
				v += "\r\n\t"
				line = 1
			}
		}
		v += h
		line += len(h)
	}
	e.add(status, v)
}

// tests lists what contributed to the score: the rules a spam stage names
// in its reason, and for other stages with a score (or a spam stage that
// names none) the stage's name and result, as "DNSBL_ZEN_LISTED=3".
func tests(results []stages.Result) []string {
	var hits []string
	for _, r := range results {
		var rules []string
		if r.Kind == "spam" {
			for _, w := range strings.FieldsFunc(r.Reason, func(c rune) bool { return c == ',' || c == ' ' || c == ';' }) {
				if w = strings.TrimPrefix(w, "tests="); ruleHit.MatchString(w) {
					rules = append(rules, w)
				}
			}
		}
		if len(rules) == 0 && r.Score != 0 {
			rules = []string{testName(r.Stage, r.Result) + "=" + formatScore(r.Score)}
		}
		hits = append(hits, rules...)
		if len(hits) >= maxTests {
			return hits[:maxTests]
		}
	}
	return hits
}

// testName makes a test name of a stage name and result word: upper case,
// anything but letters and digits as "_", bounded.
func testName(stage, result string) string {
	s := stage
	if result != "" {
		s += "_" + result
	}
	s = strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		case r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
			return r
		}
		return '_'
	}, s)
	if len(s) > 64 {
		s = s[:64]
	}
	return s
}

func totalScore(results []stages.Result) float64 {
	var t float64
	for _, r := range results {
		t += r.Score
	}
	return t
}

// formatScore writes a score with one or two decimals, as 5.0, 0.25 or
// -1.5: enough for rule scores, without float noise like 5.1000000000000005.
func formatScore(s float64) string {
	if math.IsNaN(s) || math.IsInf(s, 0) {
		return "0.0"
	}
	if math.Abs(s) < 1e12 {
		s = math.Round(s*100) / 100
	}
	if s == 0 {
		s = 0 // not -0
	}
	v := strconv.FormatFloat(s, 'f', -1, 64)
	if !strings.Contains(v, ".") {
		v += ".0"
	}
	return v
}
