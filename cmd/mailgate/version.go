package main

import (
	"cmp"
	"fmt"
	"io"
	"runtime"

	"github.com/mailgate/mailgate/gateway"
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
		revision = gateway.BuildSetting("vcs.revision")
		if gateway.BuildSetting("vcs.modified") == "true" {
			revision += "-dirty"
		}
	}
	if version == "" {
		version = gateway.Version()
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
