package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"strings"

	"github.com/mailgate/mailgate/policy"
)

// The manual pages, made from what the code uses: mailgate(8) from the
// command table (each command's text and the usage it prints for -h),
// mailgate.toml(5) from policy.Reference. `mailgate man 8 | man -l -`
// reads one where they are not installed; the Debian package installs
// both.

func cmdMan(args []string, stdout, stderr io.Writer) error {
	if len(args) != 1 || (args[0] != "5" && args[0] != "8") {
		fmt.Fprintln(stderr, "usage: mailgate man 5|8\n\n5: mailgate.toml(5), every config key; 8: mailgate(8), the commands.")
		if len(args) == 1 && isHelp(args[0]) {
			return nil
		}
		return errUsage
	}
	if args[0] == "5" {
		_, err := io.WriteString(stdout, manConfig())
		return err
	}
	_, err := io.WriteString(stdout, manCommands())
	return err
}

// manHeader is the .TH line: the date is the build's, so that a page does
// not change from one run to the next.
func manHeader(title, section, manual string) string {
	date := buildDate
	if len(date) >= 10 {
		date = date[:10]
	}
	return fmt.Sprintf(".TH %s %s %q %q %q\n", title, section, date, "mailgate "+version, manual)
}

func manCommands() string {
	var b strings.Builder
	b.WriteString(manHeader("MAILGATE", "8", "System Manager's Manual"))
	b.WriteString(`.SH NAME
mailgate \- filtering mail gateway
.SH SYNOPSIS
.B mailgate
.I command
.RI [ flags ]
.RI [ arguments ]
.SH DESCRIPTION
`)
	b.WriteString(roffText("mailgate accepts mail over SMTP, runs every message through a chain of filter stages, each in its own process, " +
		"decides with a policy written in TOML, and relays what it accepts to the internal mail servers, queueing and retrying until they take it. " +
		"A rejected message is refused while the client waits, so nobody is sent a bounce for spam."))
	b.WriteString(".PP\n")
	b.WriteString(roffText("Without `-config`, every command reads " + defaultConfig + ", or the embedded quickstart config when that file does not exist. " +
		"Flags may come before or after arguments; `-h` after a command prints its usage."))
	b.WriteString(".SH COMMANDS\n")
	for _, c := range commands() {
		fmt.Fprintf(&b, ".SS %s\n", roffEscape(strings.TrimSpace("mailgate "+c.name+" "+c.synopsis)))
		for i, p := range strings.Split(c.page, "\n\n") {
			if i > 0 {
				b.WriteString(".PP\n")
			}
			b.WriteString(roffText(p))
		}
		if c.help != nil {
			var out bytes.Buffer
			c.run(c.help, &out, &out)
			b.WriteString(".PP\n.RS 4\n.nf\n")
			for line := range strings.Lines(out.String()) {
				b.WriteString(roffLiteral(roffEscape(strings.ReplaceAll(strings.TrimRight(line, "\n"), "\t", "    "))) + "\n")
			}
			b.WriteString(".fi\n.RE\n")
		}
	}
	b.WriteString(`.SH SIGNALS
.TP
.B SIGHUP
`)
	b.WriteString(roffText("`mailgate serve` re-reads its config file; a config with errors is refused and logged, and the running one stays. " +
		"Changes to listeners, `data_dir` and a few other keys need a restart and are refused as such."))
	b.WriteString(".TP\n.BR SIGTERM \", \" SIGINT\n")
	b.WriteString(roffText("Stop taking mail, let sessions in progress finish for up to 30 seconds, stop. Accepted mail stays in the spool for the next start."))
	b.WriteString(".SH FILES\n.TP\n.I " + defaultConfig + "\n")
	b.WriteString(roffText("The config file: mailgate.toml(5)."))
	b.WriteString(".TP\n.I /var/lib/mailgate\n")
	b.WriteString(roffText("The data directory of the Debian package (`data_dir`): the spool, the quarantine, traces and the stages' state."))
	b.WriteString(`.SH EXIT STATUS
0 on success, 1 on an error (a config error is printed with its file, line and key), 2 on a usage error.
.SH SEE ALSO
.BR mailgate.toml (5),
.BR systemd.service (5)
`)
	return b.String()
}

func manConfig() string {
	var b strings.Builder
	b.WriteString(manHeader("MAILGATE.TOML", "5", "File Formats Manual"))
	b.WriteString(`.SH NAME
mailgate.toml \- configuration of the mailgate mail gateway
.SH SYNOPSIS
.I ` + defaultConfig + `
.SH DESCRIPTION
`)
	for i, p := range []string{
		"The config file is TOML. Unknown keys are errors, as are values of the wrong type; every error names the file, line and key, and the values allowed there. " +
			"`mailgate check` validates a file, `mailgate config` prints the config in force (`-n`: what the file sets, `-d`: the defaults). " +
			"SIGHUP makes the gateway re-read it; a config with errors is refused and the running one stays.",
		"Sizes and durations are strings with their unit: `max_message_size = \"50MB\"` (`B`, `KB`, `MB`, `GB` are powers of 1000, `KiB`, `MiB`, `GiB` of 1024), `timeout = \"30s\"` (`s`, `m`, `h`). A bare number is an error.",
		"Each key below is written with its type and default. The keys of each stage kind's `[stage.config]` are in the kind's README (/usr/share/doc/mailgate/stages/KIND/README.md in the Debian package).",
	} {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		b.WriteString(roffText(p))
	}
	b.WriteString(".SH KEYS\n")
	for _, k := range policy.Keys() {
		if k.Table {
			name := "[" + k.Key + "]"
			if k.Type == "array of tables" {
				name = "[" + name + "]"
			}
			fmt.Fprintf(&b, ".SS %s\n", roffEscape(name))
			b.WriteString(roffText(k.Text))
			continue
		}
		what := k.Type
		if k.Values != nil {
			what = "one of " + strings.Join(k.Values, ", ")
		}
		switch def := k.Default; {
		case def == "(required)":
			what += "; required"
		case strings.HasPrefix(def, "("):
			what += "; default: " + strings.TrimSuffix(strings.TrimPrefix(def, "("), ")")
		case def != "":
			what += "; default " + def
		}
		fmt.Fprintf(&b, ".TP\n.B %s\n", roffEscape(k.Key[strings.LastIndex(k.Key, ".")+1:]))
		b.WriteString(roffText("(" + what + ") " + k.Text))
	}
	b.WriteString(`.SH FILES
.TP
.I ` + defaultConfig + `
The config file, read by every command without
.BR \-config .
.SH SEE ALSO
.BR mailgate (8)
`)
	return b.String()
}

var (
	markdownLink = regexp.MustCompile(`\[([^\]]+)\]\([^)]+\)`)
	markdownCode = regexp.MustCompile("`([^`]+)`")
)

// roffText turns a paragraph of the docs' Markdown (`code`, [links](x))
// into a roff paragraph: code in bold, links as their text.
func roffText(s string) string {
	s = markdownLink.ReplaceAllString(s, "$1")
	var b strings.Builder
	last := 0
	for _, m := range markdownCode.FindAllStringSubmatchIndex(s, -1) {
		b.WriteString(roffEscape(s[last:m[0]]))
		b.WriteString(`\fB` + roffEscape(s[m[2]:m[3]]) + `\fR`)
		last = m[1]
	}
	b.WriteString(roffEscape(s[last:]))
	return roffLiteral(b.String()) + "\n"
}

// roffEscape escapes the backslashes and dashes of text for roff.
func roffEscape(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

// roffLiteral keeps a line from being read as a request: one that starts
// with a dot or a quote gets a zero-width character first.
func roffLiteral(line string) string {
	if strings.HasPrefix(line, ".") || strings.HasPrefix(line, "'") {
		return `\&` + line
	}
	return line
}
