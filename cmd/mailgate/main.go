// Command mailgate is the one binary of the mail gateway: it serves mail,
// checks configs and prints the one in force, dry-runs a message through
// the filter chain, lists what each stage's plugin describes, operates the
// queue and quarantine, prints message traces, asks a running gateway to
// reload, makes DKIM keys, prints its manual pages, and serves the
// built-in stage kinds as plugins. The commands are one table
// (commands.go).
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
)

func main() {
	completeBuildInfo()
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error whose message has already been printed.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usageText())
		return 2
	}
	var err error
	switch name := args[0]; name {
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usageText())
	default:
		i := slices.IndexFunc(commands(), func(c command) bool { return c.name == name })
		if i < 0 {
			fmt.Fprintf(stderr, "mailgate: unknown command %q\n\n%s", name, usageText())
			return 2
		}
		err = commands()[i].run(args[1:], stdout, stderr)
	}
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp): // -h: the usage was asked for
		return 0
	case errors.Is(err, errUsage):
		return 2
	case errors.Is(err, errConfig):
		return 1
	default:
		fmt.Fprintf(stderr, "mailgate %s: %v\n", args[0], err)
		return 1
	}
}

// errConfig marks a config error that was already printed: exit 1.
var errConfig = errors.New("invalid config")
