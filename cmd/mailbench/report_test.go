package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestWriteReport(t *testing.T) {
	file := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	md := func(s string) string { return beginMarker + "\n" + s + "\n" + endMarker + "\n" }

	// A missing file is created with the report alone.
	if err := writeReport(file, md("one")); err != nil {
		t.Fatal(err)
	}
	read := func() string {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	if got := read(); got != md("one") {
		t.Errorf("new file = %q", got)
	}

	// Text around the markers stays; what is between them is replaced.
	os.WriteFile(file, []byte("# Benchmarks\n\nintro\n\n"+md("old")+"\nafter\n"), 0o644)
	if err := writeReport(file, md("two")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "# Benchmarks\n\nintro\n\n"+md("two")+"\nafter\n"; got != want {
		t.Errorf("replaced file = %q, want %q", got, want)
	}

	// A begin marker written by hand, with other words, is found too.
	os.WriteFile(file, []byte("intro\n<!-- mailbench:begin -->\n<!-- mailbench:end -->\nafter\n"), 0o644)
	if err := writeReport(file, md("hand")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "intro\n"+md("hand")+"after\n"; got != want {
		t.Errorf("replaced file = %q, want %q", got, want)
	}

	// A file without markers gets the report at its end.
	os.WriteFile(file, []byte("# Benchmarks\n"), 0o644)
	if err := writeReport(file, md("three")); err != nil {
		t.Fatal(err)
	}
	if got, want := read(), "# Benchmarks\n\n"+md("three"); got != want {
		t.Errorf("appended file = %q, want %q", got, want)
	}
}

func TestMarkdownSkippedLine(t *testing.T) {
	o, err := parseFlags([]string{"-n", "10"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	r := newReport(o)
	r.runs = []sizeRun{{label: "small", messages: 10, size: 5 << 10}}
	r.lines = []*line{{name: lineChain, skip: "a stage kind is unknown | here", stats: map[string]*stats{}}}
	got := r.markdown()
	if !strings.Contains(got, `| mailgate+chain | skipped: a stage kind is unknown \| here |`) || !strings.Contains(got, "10 messages of 5 KiB") {
		t.Errorf("markdown:\n%s", got)
	}
}

func TestParseFlags(t *testing.T) {
	o, err := parseFlags([]string{"-n", "2000", "-size", "10KiB"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if o.messages != 2000 || o.size != 10<<10 || o.large != 400 || o.largeSize != 100<<10 {
		t.Errorf("options %+v", o)
	}
	for _, bad := range [][]string{{"-lines", "postfix,exim"}, {"-n", "0"}, {"extra"}} {
		if _, err := parseFlags(bad, &strings.Builder{}); err == nil {
			t.Errorf("parseFlags(%q): no error", bad)
		}
	}
}
