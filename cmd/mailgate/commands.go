package main

import (
	"fmt"
	"io"
	"os"
	"strings"
)

// command is one "mailgate NAME". run dispatches through the table, and
// the usage text and the mailgate(8) manual page are made from it, so a
// command cannot exist without its line and its page.
type command struct {
	name     string
	synopsis string // the arguments after the name
	summary  string // one line, for the usage text
	// page is the command's section in mailgate(8): paragraphs separated
	// by a blank line, `code` as in Markdown.
	page string
	// help are the arguments that make the command print its usage and
	// flags (into mailgate(8) as printed); nil for none.
	help []string
	run  func(args []string, stdout, stderr io.Writer) error
}

// commands is the table of every command, in the order the usage lists
// them.
func commands() []command {
	withStderr := func(f func([]string, io.Writer) error) func([]string, io.Writer, io.Writer) error {
		return func(args []string, _, stderr io.Writer) error { return f(args, stderr) }
	}
	return []command{
		{name: "serve", synopsis: "[-config FILE]", summary: "run the gateway", help: []string{"-h"}, run: withStderr(cmdServe),
			page: "Runs the gateway: the SMTP listeners, the stage plugins, delivery and the admin listener. " +
				"It logs to standard error. SIGHUP reloads the config file (a config with errors is refused and the running one stays); " +
				"SIGTERM and SIGINT stop taking mail, let sessions finish for up to 30 seconds and stop. " +
				"Under systemd (`Type=notify`) it tells the service manager when it is ready, reloading and stopping."},
		{name: "check", synopsis: "[-config FILE]", summary: "validate a config; exit 1 with positioned errors", help: []string{"-h"}, run: cmdCheck,
			page: "Validates the config and starts every stage's plugin once, so that what a kind refuses in its `[stage.config]` is reported too. " +
				"Every error names the file, line and key, and the values allowed there. Exit 0 when the config is good, 1 otherwise."},
		{name: "config", synopsis: "[-config FILE] [-n | -d] [KEY...]", summary: "print the config in force (as postconf): -n what the file sets, -d the defaults", help: []string{"-h"}, run: cmdConfig,
			page: "Prints the configuration in force, one `key = value` line per key, values written as in TOML: every key, with the defaults of those the file does not set. " +
				"With `-n`, only the keys the file sets; with `-d`, the default of every key that has one, as mailgate.toml(5) lists them. " +
				"With KEY arguments (`server.listen`, `route[0]`, `delivery`), only those keys or the keys of those tables. " +
				"Keys are named as errors name them: `route[0].tls`, `stage[1].config.address`."},
		{name: "test", synopsis: "[-config FILE] -client-ip IP -helo NAME -from ADDR -to ADDR [-json] MSG.eml", summary: "dry run of one message through the real pipeline", help: []string{"-h"}, run: cmdTest,
			page: "Runs one message through the very code the SMTP listener runs, stages and all, with delivery switched off, " +
				"and prints the action, the reply the client would get, every stage's verdict and the header fields added and removed. Nothing is delivered."},
		{name: "plugins", synopsis: "[-config FILE]", summary: "start each stage's plugin and show what it describes", help: []string{"-h"}, run: cmdPlugins,
			page: "Starts each configured stage's plugin and prints its kind, version, phases, what it needs of a message, its edits, timeout and on_error."},
		{name: "queue", synopsis: "list|show|flush|retry|hold|release|delete [-config FILE] [flags] [ID...|ALL]", summary: "the running gateway's queue", help: []string{"-h"}, run: cmdQueue,
			page: "Lists and operates the running gateway's queue through its admin API (`[admin] listen`), so that the gateway stays the one process writing its data directory."},
		{name: "quarantine", synopsis: "list|show|release|delete [-config FILE] [flags] [ID...|ALL]", summary: "the running gateway's quarantine", help: []string{"-h"}, run: cmdQuarantine,
			page: "Lists, shows, releases and deletes quarantined messages through the running gateway's admin API. A release delivers a message once. " +
				"`release -rcpt ADDR[,ADDR]` delivers it to those of its recipients only, once each: a second release to one of them is refused, and the others stay held for a release of their own."},
		{name: "trace", synopsis: "[-config FILE] [-json] QUEUE-ID|MESSAGE-ID", summary: "what happened to a message, rejected ones too", help: []string{"-h"}, run: cmdTrace,
			page: "Prints everything that happened to a message, by queue ID or Message-ID: the connection, every stage's verdict, the decision and the reply, each delivery attempt, DSNs and operator actions. " +
				"It reads the trace files under the data directory."},
		{name: "reload", synopsis: "[-config FILE]", summary: "make the running gateway re-read its config (as SIGHUP)", help: []string{"-h"}, run: cmdReload,
			page: "Asks the running gateway, through its admin API, to re-read its config file, and prints the outcome: a config with errors is refused with them and the running one stays."},
		{name: "cluster", synopsis: "status|import|remove [-config FILE] [-json] [NODE]", summary: "the nodes of the [cluster] (version, config, health), copy this node's own state into the cluster, or take a node gone for good out of it", help: []string{"-h"}, run: cmdCluster,
			page: "status lists the nodes registered in the cluster's PostgreSQL with their version, config hash and last heartbeat, and flags a stale node or one whose config differs from the others. import copies this node's quarantine, traces and lists into PostgreSQL; run again, it copies nothing twice. remove NODE ends the quarantine releases a node gone for good had under way and takes it out of the registry; it refuses a live node."},
		{name: "dkim", synopsis: "keygen -domain DOMAIN -selector SELECTOR [-algorithm A] [-bits N] [-out DIR]", summary: "write a DKIM private key, print the DNS record to publish", help: []string{"keygen", "-h"}, run: cmdDKIM,
			page: "Writes a private key for the dkim-sign stage to DIR/DOMAIN.SELECTOR.key (mode 0600, never over an existing file) and prints the DNS TXT record that publishes its public half."},
		{name: "user", synopsis: "add|passwd|remove [-config FILE] [-role admin|auditor] [-print] NAME", summary: "add a web console account, change its password or remove it; the password is read from stdin", help: []string{"-h"},
			run: func(args []string, stdout, stderr io.Writer) error { return cmdUser(args, os.Stdin, stdout, stderr) },
			page: "add adds an account of the web console (`[web]`) to the config file, with the password read from the terminal or standard input and stored as an argon2id hash. " +
				"With `-print`, it prints the `[[web.user]]` table to put in the config instead.\n\n" +
				"passwd replaces the account's `password_hash` with the hash of a new password; remove cuts its `[[web.user]]` table out of the file. " +
				"Either keeps the change only if the whole file still loads, and then makes the running gateway reload it (through `[admin] listen`), which ends the account's sessions at once: a session is signed over its user's hash and role."},
		{name: "man", synopsis: "5|8", summary: "print the manual page mailgate.toml(5) or mailgate(8)", run: cmdMan,
			page: "Prints a manual page in roff: `mailgate man 8 | man -l -` reads this page, `mailgate man 5` the one of every config key, where they are not installed."},
		{name: "version", summary: "the version, VCS revision and build date", run: cmdVersion,
			page: "Prints the version, the VCS revision the binary was built from (with `-dirty` for uncommitted changes), its build date and the Go version."},
		{name: "plugin", synopsis: "KIND...", summary: "serve built-in stage kinds, one or a process group (started by the gateway)", run: withStderr(cmdPlugin),
			page: "Serves a built-in stage kind over the plugin protocol. The gateway starts it, one process per stage; it is not for running by hand."},
	}
}

// usageText is what "mailgate" alone and "mailgate help" print.
func usageText() string {
	var b strings.Builder
	b.WriteString("mailgate is a filtering mail gateway.\n\nUsage:\n")
	for _, c := range commands() {
		line := strings.TrimSpace("  mailgate " + c.name + " " + c.synopsis)
		if len(line) <= 31 {
			fmt.Fprintf(&b, "  %-31s  %s\n", line, c.summary)
		} else {
			fmt.Fprintf(&b, "  %s\n%35s%s\n", line, "", c.summary)
		}
	}
	b.WriteString(`
Without -config, every command reads ` + defaultConfig + `, or the
embedded quickstart config when that file does not exist. Flags may come
before or after arguments. Run "mailgate COMMAND -h" for a command's flags.
`)
	return b.String()
}
