package readmetest

import (
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/stages"
)

// required are the sections every kind's README has, in this order, after
// its title ("# kind") and a first paragraph that says what the kind does
// and in which phases. The first is the first section of the README;
// other sections may come anywhere after it.
var required = [...]string{"Configuration", "Results", "Metrics", "Example"}

// resultsHeader is the header of the table that opens a README's Results
// section: one row per result word the kind declares, with the action and
// score the kind reports it with (before any [stage.results] mapping) and
// what it means.
var resultsHeader = [...]string{"Result", "Action", "Score", "Meaning"}

// Skeleton checks that the README file of the kind info describes has the
// skeleton every kind's README has, as CoreDNS's plugin READMEs do, so that
// an admin finds the same things in the same places (other sections may
// follow Configuration):
//
//	# <kind>
//
//	What it does; names the phases it runs in.
//
//	## Configuration   every key
//	## Results         Result | Action | Score | Meaning: each word of info.Results, no other
//	## Metrics         the pipeline's per-stage series and any of the kind's own
//	## Example         a ```toml block
func Skeleton(t testing.TB, file string, info stages.Info) {
	t.Helper()
	md, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for _, err := range checkSkeleton(string(md), info) {
		t.Errorf("%s: %v", file, err)
	}
}

// section is a "##" section of a README: its heading and the lines below
// it, up to the next "##" heading.
type section struct {
	title string
	lines []string
}

// splitSections splits a Markdown text into its title ("# ..." on the first
// line), the lines before the first "##" heading, and the "##" sections.
// Lines in fenced code blocks are never headings: a TOML comment starts
// with "#" too.
func splitSections(md string) (title string, intro []string, secs []section) {
	lines := strings.Split(strings.ReplaceAll(md, "\r\n", "\n"), "\n")
	if len(lines) > 0 && strings.HasPrefix(lines[0], "# ") {
		title, lines = strings.TrimSpace(strings.TrimPrefix(lines[0], "# ")), lines[1:]
	}
	fenced := false
	for _, l := range lines {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
		}
		if h, ok := strings.CutPrefix(l, "## "); ok && !fenced {
			secs = append(secs, section{title: strings.TrimSpace(h)})
			continue
		}
		if len(secs) == 0 {
			intro = append(intro, l)
		} else {
			secs[len(secs)-1].lines = append(secs[len(secs)-1].lines, l)
		}
	}
	return title, intro, secs
}

func checkSkeleton(md string, info stages.Info) []error {
	var errs []error
	fail := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }

	title, intro, secs := splitSections(md)
	if title != info.Kind {
		fail("the first line is %q; want the title \"# %s\"", strings.SplitN(md, "\n", 2)[0], info.Kind)
	}
	text := strings.TrimSpace(strings.Join(intro, "\n"))
	if text == "" {
		fail("no paragraph after the title saying what the kind does")
	}
	for _, ph := range phaseNames(info.Phases) {
		if !regexp.MustCompile(`(?i)\b` + ph + `\b`).MatchString(text) {
			fail("the text before ## %s does not name the %s phase", required[0], ph)
		}
	}

	byTitle := map[string]section{}
	var order []string
	for _, s := range secs {
		if !slices.Contains(required[:], s.title) {
			continue
		}
		if _, dup := byTitle[s.title]; dup {
			fail("## %s twice", s.title)
			continue
		}
		byTitle[s.title] = s
		order = append(order, s.title)
	}
	var want []string
	for _, s := range required {
		if _, ok := byTitle[s]; ok {
			want = append(want, s)
		} else {
			fail("no ## %s section", s)
		}
	}
	if !slices.Equal(order, want) {
		fail("sections in the order %s; want %s", strings.Join(order, ", "), strings.Join(required[:], ", "))
	}
	if len(secs) > 0 && secs[0].title != required[0] {
		fail("the first section is ## %s; want ## %s, other sections after it", secs[0].title, required[0])
	}
	if s, ok := byTitle["Metrics"]; ok && strings.TrimSpace(strings.Join(s.lines, "")) == "" {
		fail("## Metrics is empty; name the pipeline's per-stage series, and say so if the kind has none of its own")
	}
	if s, ok := byTitle["Example"]; ok && !slices.ContainsFunc(s.lines, func(l string) bool { return strings.HasPrefix(l, "```toml") }) {
		fail("## Example has no ```toml block")
	}
	if s, ok := byTitle["Results"]; ok {
		errs = append(errs, checkResults(s.lines, info)...)
	}
	return errs
}

// checkResults checks the first table of the Results section: its header
// is ResultsHeader and its first column names each result word the kind
// declares, once, and no other.
func checkResults(lines []string, info stages.Info) []error {
	var errs []error
	var rows [][]string
	fenced := false
	for _, l := range lines {
		if strings.HasPrefix(l, "```") {
			fenced = !fenced
			continue
		}
		if !fenced && strings.HasPrefix(strings.TrimSpace(l), "|") {
			rows = append(rows, cells(l))
			continue
		}
		if len(rows) > 0 {
			break
		}
	}
	if len(rows) < 2 {
		return []error{fmt.Errorf("## Results has no table; want one with the columns %s", strings.Join(resultsHeader[:], " | "))}
	}
	if !slices.EqualFunc(rows[0], resultsHeader[:], strings.EqualFold) {
		errs = append(errs, fmt.Errorf("## Results table has the columns %s; want %s", strings.Join(rows[0], " | "), strings.Join(resultsHeader[:], " | ")))
	}
	var words []string
	for _, r := range rows[2:] { // after the header and its |---| line
		w := strings.Trim(r[0], "` ")
		switch {
		case slices.Contains(words, w):
			errs = append(errs, fmt.Errorf("## Results names %q twice", w))
		case !slices.Contains(info.Results, w):
			errs = append(errs, fmt.Errorf("## Results names %q, which kind %s does not declare (%s)", w, info.Kind, strings.Join(info.Results, ", ")))
		}
		words = append(words, w)
	}
	for _, w := range info.Results {
		if !slices.Contains(words, w) {
			errs = append(errs, fmt.Errorf("## Results does not name %q, a result word kind %s declares", w, info.Kind))
		}
	}
	return errs
}

// cells splits a Markdown table row into its cells; "\|" is a pipe inside
// a cell.
func cells(row string) []string {
	row = strings.TrimSpace(row)
	row = strings.TrimSuffix(strings.TrimPrefix(row, "|"), "|")
	var out []string
	var b strings.Builder
	for i := 0; i < len(row); i++ {
		switch {
		case row[i] == '\\' && i+1 < len(row) && row[i+1] == '|':
			b.WriteByte('|')
			i++
		case row[i] == '|':
			out = append(out, strings.TrimSpace(b.String()))
			b.Reset()
		default:
			b.WriteByte(row[i])
		}
	}
	return append(out, strings.TrimSpace(b.String()))
}

// phaseNames are the names of the phases p has: "connect", "mail", …
func phaseNames(p stages.Phase) []string {
	if p == 0 {
		return nil
	}
	return strings.Split(p.String(), "|")
}
