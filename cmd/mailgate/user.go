package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/mailgate/mailgate/policy"
)

// cmdUser runs the user subcommands: add.
func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	const use = "usage: mailgate user add [-config FILE] [-role admin|auditor] [-print] NAME  (the password is read from the terminal or standard input)"
	if len(args) == 0 || args[0] != "add" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "-help" || args[0] == "help") {
			fmt.Fprintln(stdout, use)
			return nil
		}
		fmt.Fprintln(stderr, use)
		return errUsage
	}
	fs := flag.NewFlagSet("user add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, use)
	config := fs.String("config", defaultConfig, "the config file the user is added to")
	role := fs.String("role", "admin", "admin or auditor (reads, changes nothing)")
	print := fs.Bool("print", false, "print the [[web.user]] table instead of adding it to the config")
	rest, err := parseAll(fs, args[1:])
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		fs.Usage()
		return errUsage
	}
	name := rest[0]
	if !slices.Contains(policy.WebRoles, *role) {
		fmt.Fprintf(stderr, "mailgate user add: -role %q: expect admin or auditor\n", *role)
		return errUsage
	}
	password, err := readPassword(stdin, stderr)
	if err != nil {
		return err
	}
	hash, err := policy.HashPassword(password)
	if err != nil {
		return err
	}
	table := fmt.Sprintf("\n[[web.user]]\nname = %s\npassword_hash = %s\n", strconv.Quote(name), strconv.Quote(hash))
	if *role != "admin" {
		table += fmt.Sprintf("role = %s\n", strconv.Quote(*role))
	}
	if *print {
		_, err := io.WriteString(stdout, strings.TrimPrefix(table, "\n"))
		return err
	}
	if err := appendChecked(*config, table); err != nil {
		return configError(err, stderr)
	}
	fmt.Fprintf(stdout, "added %s (%s) to %s; `mailgate reload` makes the running gateway take it\n", name, *role, *config)
	return nil
}

// appendChecked adds text at the end of the config file, keeping the
// change only if the whole file then loads: a duplicate name or any
// other mistake leaves the file as it was. The file is replaced through
// a rename, so the gateway never reads half of it.
func appendChecked(file, text string) error {
	old, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		text = "\n" + text
	}
	data := append(old, text...)
	if _, err := policy.Parse(file, data); err != nil {
		return err
	}
	st, err := os.Stat(file)
	if err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(file), ".mailgate-*.toml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		err = tmp.Chmod(st.Mode().Perm())
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	return os.Rename(tmp.Name(), file)
}

// readPassword reads the new password: from a terminal twice, without
// echo; otherwise the first line of stdin.
func readPassword(stdin io.Reader, stderr io.Writer) (string, error) {
	f, isFile := stdin.(*os.File)
	if isFile {
		if old, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS); err == nil {
			noEcho := *old
			noEcho.Lflag &^= unix.ECHO
			if err := unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, &noEcho); err == nil {
				defer unix.IoctlSetTermios(int(f.Fd()), unix.TCSETS, old)
				r := bufio.NewReader(f)
				fmt.Fprint(stderr, "Password: ")
				p1, err1 := r.ReadString('\n')
				fmt.Fprint(stderr, "\nAgain: ")
				p2, err2 := r.ReadString('\n')
				fmt.Fprintln(stderr)
				if err := errors.Join(err1, err2); err != nil {
					return "", err
				}
				if p1 != p2 {
					return "", errors.New("the passwords differ")
				}
				return checkPassword(strings.TrimRight(p1, "\r\n"))
			}
		}
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return "", err
	}
	return checkPassword(strings.TrimRight(line, "\r\n"))
}

func checkPassword(p string) (string, error) {
	if len(p) < 8 {
		return "", errors.New("the password must have at least 8 characters")
	}
	return p, nil
}
