package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"
	"runtime/debug"
)

// What the binary is, set by the build: the Makefile passes
// -ldflags "-X main.revision=<git revision> -X main.buildDate=<date>",
// so that a binary built with GOFLAGS=-buildvcs=false, or where the go
// command stamps no VCS information (a linked git worktree, a tarball),
// still names its revision. completeBuildInfo fills in the rest at start.
var version, revision, buildDate string

// completeBuildInfo fills in what the build did not set: the version from
// the module or the revision, the revision from Go's VCS stamp.
func completeBuildInfo() {
	if revision == "" {
		revision = buildSetting("vcs.revision")
		if buildSetting("vcs.modified") == "true" {
			revision += "-dirty"
		}
	}
	if version == "" {
		version = moduleVersion()
	}
	if version == "dev" && revision != "" {
		version = revision[:min(12, len(revision))]
	}
}

func cmdVersion(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		fmt.Fprintln(stderr, "usage: mailgate version")
		return errUsage
	}
	fmt.Fprintf(stdout, "mailgate %s\nrevision: %s\nbuilt: %s\ngo: %s %s/%s\n", version, cmp.Or(revision, "unknown"),
		cmp.Or(buildDate, "unknown"), runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return nil
}

// moduleVersion is this build's version: the module version it was built as,
// else the VCS revision it was built from (with "-dirty" for uncommitted
// changes), else "dev".
func moduleVersion() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	rev := buildSetting("vcs.revision")
	if rev == "" {
		return "dev"
	}
	rev = rev[:min(len(rev), 12)]
	if buildSetting("vcs.modified") == "true" {
		rev += "-dirty"
	}
	return rev
}

// buildSetting is a setting the binary was built with (debug.BuildSetting),
// or "".
func buildSetting(key string) string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		for _, s := range bi.Settings {
			if s.Key == key {
				return s.Value
			}
		}
	}
	return ""
}
