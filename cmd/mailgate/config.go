package main

import (
	"flag"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/mailgate/mailgate/policy"
)

// cmdConfig prints the config in force, as postconf prints main.cf: every
// key, -n those the file sets, -d the defaults; KEY arguments pick keys
// or tables.
func cmdConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("config", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, "usage: mailgate config [-config FILE] [-n | -d] [KEY...]\n\n"+
		"Prints the config in force, one key = value line per key (as postconf).\n"+
		"KEY is a key or a table: server.listen, route[0], delivery.")
	file := fs.String("config", "", configFlagHelp)
	setOnly := fs.Bool("n", false, "only the keys the file sets")
	defaults := fs.Bool("d", false, "the default of every key instead (mailgate.toml(5))")
	keys, err := parseAll(fs, args)
	if err != nil {
		return err
	}
	if *setOnly && *defaults {
		fmt.Fprintln(stderr, "mailgate config: -n and -d exclude each other")
		fs.Usage()
		return errUsage
	}
	var lines []setting
	if *defaults {
		for _, k := range policy.Keys() {
			if !k.Table && k.Default != "" && k.Default != "(required)" {
				lines = append(lines, setting{k.Name, k.Default})
			}
		}
	} else {
		cfg, err := loadConfig(*file)
		if err != nil {
			fmt.Fprintln(stderr, err)
			return errConfig
		}
		for _, s := range cfg.Settings() {
			if s.Set || !*setOnly {
				lines = append(lines, setting{s.Key, s.Value})
			}
		}
	}
	if len(keys) == 0 {
		for _, l := range lines {
			fmt.Fprintf(stdout, "%s = %s\n", l.key, l.value)
		}
		return nil
	}
	var unknown []string
	for _, k := range keys {
		found := false
		for _, l := range lines {
			if l.under(k, *defaults) {
				fmt.Fprintf(stdout, "%s = %s\n", l.key, l.value)
				found = true
			}
		}
		if !found {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("no key %s here; the keys are in mailgate.toml(5) and README.md", strings.Join(unknown, ", "))
	}
	return nil
}

// setting is one line of `mailgate config`.
type setting struct{ key, value string }

var index = regexp.MustCompile(`\[[0-9]+\]`)

// under reports whether the line is key k or a key of table k. The
// defaults name the keys of an array of tables route[].tls, which
// route[0].tls and route.tls ask for too.
func (l setting) under(k string, defaults bool) bool {
	key := l.key
	if defaults {
		key = strings.ReplaceAll(key, "[]", "")
		k = index.ReplaceAllString(k, "")
	}
	return key == k || strings.HasPrefix(key, k+".") || strings.HasPrefix(key, k+"[")
}
