// Command mailgate is the one binary of the mail gateway: it serves mail,
// checks configs, dry-runs a message through the filter chain, lists what
// each stage's plugin describes, operates the queue and quarantine, prints
// message traces, asks a running gateway to reload, makes DKIM keys, adds
// web console accounts, and
// serves the built-in stage kinds as plugins.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mailgate/mailgate/gateway"
)

const usage = `mailgate is a filtering mail gateway.

Usage:
  mailgate serve [-config FILE]    run the gateway
  mailgate check [-config FILE]    validate a config; exit 1 with positioned errors
  mailgate test [-config FILE] -client-ip IP -helo NAME -from ADDR -to ADDR [-json] MSG.eml
                                   dry run of one message through the real pipeline
  mailgate plugins [-config FILE]  start each stage's plugin and show what it describes
  mailgate queue list|show|flush|retry|hold|release|delete [-config FILE] [flags] [ID...|ALL]
                                   the running gateway's queue
  mailgate quarantine list|show|release|delete [-config FILE] [flags] [ID...|ALL]
                                   the running gateway's quarantine
  mailgate trace [-config FILE] [-json] QUEUE-ID|MESSAGE-ID
                                   what happened to a message, rejected ones too
  mailgate reload [-config FILE]   make the running gateway re-read its config (as SIGHUP)
  mailgate dkim keygen -domain DOMAIN -selector SELECTOR [-algorithm A] [-bits N] [-out DIR]
                                   write a DKIM private key, print the DNS record to publish
  mailgate user add [-config FILE] [-role admin|auditor] [-print] NAME
                                   add a web console account; the password is read from stdin
  mailgate plugin KIND             serve a built-in stage kind (started by the gateway)
  mailgate version

Without -config, every command reads /etc/mailgate/mailgate.toml, or the
embedded quickstart config when that file does not exist. Flags may come
before or after arguments. Run "mailgate COMMAND -h" for a command's flags.
`

// version is set by the build (-ldflags "-X main.version=..."); when it
// is not, main takes it from the VCS stamp Go puts in the binary.
var version = ""

func main() {
	if version == "" {
		version = gateway.Version()
	}
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// errUsage marks an error whose message has already been printed.
var errUsage = errors.New("usage")

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = cmdServe(args[1:], stderr)
	case "check":
		err = cmdCheck(args[1:], stdout, stderr)
	case "test":
		err = cmdTest(args[1:], stdout, stderr)
	case "plugins":
		err = cmdPlugins(args[1:], stdout, stderr)
	case "plugin":
		err = cmdPlugin(args[1:], stderr)
	case "queue":
		err = cmdQueue(args[1:], stdout, stderr)
	case "quarantine":
		err = cmdQuarantine(args[1:], stdout, stderr)
	case "trace":
		err = cmdTrace(args[1:], stdout, stderr)
	case "reload":
		err = cmdReload(args[1:], stdout, stderr)
	case "dkim":
		err = cmdDKIM(args[1:], stdout, stderr)
	case "user":
		err = cmdUser(args[1:], os.Stdin, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "mailgate", version)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "mailgate: unknown command %q\n\n%s", args[0], usage)
		return 2
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
