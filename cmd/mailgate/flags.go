package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/mailgate/mailgate/gateway/quarantine"
	"github.com/mailgate/mailgate/spool"
)

// defaultConfig is where every command looks for the config when -config
// is not given, as Postfix has /etc/postfix/main.cf. When it does not
// exist, the embedded quickstart config is used.
const defaultConfig = "/etc/mailgate/mailgate.toml"

// parseAll parses flags wherever they stand among the arguments, as GNU
// tools do: "queue hold ID -config F" means what "queue hold -config F ID"
// means. An argument that looks like a flag but is not one is an error;
// after "--" everything is an argument.
func parseAll(fs *flag.FlagSet, args []string) ([]string, error) {
	var rest []string
	for {
		if err := fs.Parse(args); errors.Is(err, flag.ErrHelp) {
			return nil, err
		} else if err != nil {
			return nil, errUsage // the flag package printed why, and the usage
		}
		left := fs.Args()
		if len(left) == 0 {
			return rest, nil
		}
		// Parse stops at the first argument that is not a flag, or just
		// after a "--", which it consumes: then the rest is arguments.
		if n := len(args) - len(left); n > 0 && args[n-1] == "--" {
			return append(rest, left...), nil
		}
		rest = append(rest, left[0])
		args = left[1:]
	}
}

// usageLine makes fs print line and then its flags when asked for help or
// given a wrong flag.
func usageLine(fs *flag.FlagSet, line string) {
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), line)
		fs.PrintDefaults()
	}
}

// parseNone parses a command that takes flags only: an argument left
// over is refused, not ignored ("mailgate check my.toml" must not check
// the default config and say ok).
func parseNone(fs *flag.FlagSet, args []string) error {
	rest, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if len(rest) > 0 {
		fmt.Fprintf(fs.Output(), "mailgate %s: unexpected argument %q (flags only; the config is -config FILE)\n", fs.Name(), rest[0])
		fs.Usage()
		return errUsage
	}
	return nil
}

// selection picks messages by what an operator knows of them: sender,
// recipient, age and, for the quarantine, the stage. Zero fields select
// everything.
type selection struct {
	quarantine.Filter
}

func (s *selection) flags(fs *flag.FlagSet, withStage bool) {
	fs.StringVar(&s.From, "from", "", "sender contains `S` (any case)")
	fs.StringVar(&s.Rcpt, "to", "", "a recipient contains `S` (any case)")
	fs.DurationVar(&s.OlderThan, "older", 0, "at least `DUR` old (e.g. 24h)")
	fs.DurationVar(&s.NewerThan, "newer", 0, "at most `DUR` old")
	if withStage {
		fs.StringVar(&s.Stage, "stage", "", "stage `NAME` decided, added to the score, or gave a verdict other than continue")
	}
}

func (s *selection) empty() bool { return s.Filter == quarantine.Filter{} }

// matchEnvelope applies the selection to a queued message.
func (s *selection) matchEnvelope(env *spool.Envelope, now time.Time) bool {
	rcpts := make([]string, len(env.Rcpts))
	for i, rc := range env.Rcpts {
		rcpts[i] = rc.Addr
	}
	return s.MatchMessage(env.From, rcpts, env.Received, now)
}

// targets resolves what an operation acts on: the IDs given, or ALL, or
// the messages a selection picks (list gives the candidates). Nothing at
// all is a usage error: an operation never acts on everything by default.
func targets(ids []string, sel *selection, list func() ([]string, error)) ([]string, error) {
	all := len(ids) == 1 && ids[0] == "ALL"
	switch {
	case len(ids) > 0 && !all && !sel.empty():
		return nil, errors.New("give IDs or a selection (-from, -to, ...), not both")
	case len(ids) > 0 && !all:
		for _, id := range ids {
			if id == "ALL" {
				return nil, errors.New("ALL stands alone")
			}
		}
		return ids, nil
	case !all && sel.empty():
		return nil, errUsage
	}
	return list()
}

// configFlagHelp is the -config flag's help of every command.
var configFlagHelp = fmt.Sprintf("config `FILE` (default %s, or the embedded quickstart config when it does not exist)", defaultConfig)

func fileExists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}
