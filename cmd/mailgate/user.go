package main

import (
	"bufio"
	"bytes"
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/mailgate/mailgate/admin"
	"github.com/mailgate/mailgate/policy"
)

const userUsage = `usage: mailgate user COMMAND [-config FILE] NAME

  add [-role admin|auditor] [-print] NAME
                   add a web console account; the password is read from
                   the terminal or standard input
  passwd NAME      give the account a new password: its sessions end
  remove NAME      remove the account: its sessions end

passwd and remove make the running gateway reload the file, so that the
account's sessions end at once. The file (the one a symlink points to) keeps
its owner, group and mode: run as root for a config root owns.
`

// cmdUser runs the user subcommands: add, passwd, remove.
func cmdUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	if len(args) > 0 && isHelp(args[0]) {
		fmt.Fprint(stdout, userUsage)
		return nil
	}
	if len(args) == 0 {
		fmt.Fprint(stderr, userUsage)
		return errUsage
	}
	switch args[0] {
	case "add":
		return cmdUserAdd(args[1:], stdin, stdout, stderr)
	case "passwd", "remove":
		return cmdUserChange(args[0], args[1:], stdin, stdout, stderr)
	}
	fmt.Fprint(stderr, userUsage)
	return errUsage
}

func cmdUserAdd(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	const use = "usage: mailgate user add [-config FILE] [-role admin|auditor] [-print] NAME  (the password is read from the terminal or standard input)"
	fs := flag.NewFlagSet("user add", flag.ContinueOnError)
	fs.SetOutput(stderr)
	usageLine(fs, use)
	config := fs.String("config", defaultConfig, "the config file the user is added to")
	role := fs.String("role", "admin", "admin or auditor (reads, changes nothing)")
	print := fs.Bool("print", false, "print the [[web.user]] table instead of adding it to the config")
	rest, err := parseAll(fs, args)
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

// cmdUserChange runs passwd and remove: the account's [[web.user]] table
// is changed in the file (its password_hash line replaced, or the table
// cut out), the file must still load, and the running gateway is asked
// to reload it. A session is signed over its user's hash and role, so
// the reload ends the account's sessions on this gateway.
func cmdUserChange(op string, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	o := newOpFlags("user "+op, stderr, fmt.Sprintf("usage: mailgate user %s [-config FILE] NAME\n", op))
	rest, err := parseAll(o.fs, args)
	if err != nil {
		return err
	}
	if len(rest) != 1 {
		o.fs.Usage()
		return errUsage
	}
	name, file := rest[0], *o.config
	if file == "" {
		file = defaultConfig
	}
	old, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	cfg, err := policy.Parse(file, old)
	if err != nil {
		return configError(err, stderr)
	}
	i := slices.IndexFunc(cfg.Web.Users, func(u policy.WebUser) bool { return u.Name == name })
	if i < 0 {
		return fmt.Errorf("%s has no [[web.user]] named %q", file, name)
	}
	var data []byte
	var password, done string
	if op == "passwd" {
		if password, err = readPassword(stdin, stderr); err != nil {
			return err
		}
		hash, err := policy.HashPassword(password)
		if err != nil {
			return err
		}
		data, err = replaceHash(old, cfg.Position(fmt.Sprintf("web.user.%d.password_hash", i)), hash)
		if err != nil {
			return fmt.Errorf("%w; edit the file by hand, with a hash that `mailgate user add -print` prints", err)
		}
		done = "changed the password of " + name + " in " + file
	} else {
		data, err = cutTable(old, cfg.Position(fmt.Sprintf("web.user.%d", i)))
		if err != nil {
			return fmt.Errorf("%w; edit the file by hand", err)
		}
		done = "removed " + name + " from " + file
	}
	// What was written must be what was meant, and load.
	cfg, err = policy.Parse(file, data)
	if err != nil {
		return configError(err, stderr)
	}
	j := slices.IndexFunc(cfg.Web.Users, func(u policy.WebUser) bool { return u.Name == name })
	if op == "passwd" && (j < 0 || !cfg.Web.Users[j].PasswordHash.Verify(password)) || op == "remove" && j >= 0 {
		return fmt.Errorf("%s: the change did not come out as meant; the file is left as it was; edit it by hand", file)
	}
	if err := replaceFile(file, old, data); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s; %s\n", done, reloadAfterUserChange(cfg, name))
	return nil
}

// reloadAfterUserChange asks the running gateway of cfg to reload its
// config and says what came of it for name's sessions.
func reloadAfterUserChange(cfg *policy.Config, name string) string {
	later := "the sessions of " + name + " end when the running gateway loads the file (`mailgate reload`)"
	if cfg.Admin.Listen == "" {
		return later
	}
	c, err := admin.NewClient(cfg.Admin.Listen)
	if err == nil {
		err = c.Reload(context.Background())
	}
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "the gateway is not running; it reads the file when it starts"
	case err != nil:
		return "the running gateway did not reload (" + err.Error() + "): " + later
	}
	if cfg.Cluster.Postgres != "" {
		return "this node's gateway reloaded it: the sessions of " + name + " have ended here; change the file of every other node of the cluster too"
	}
	return "the running gateway reloaded it: the sessions of " + name + " have ended"
}

// hashLine is a password_hash line as `mailgate user add` writes it.
var hashLine = regexp.MustCompile(`^(\s*password_hash\s*=\s*)("[^"\\]*"|'[^']*')(\s*(#.*)?\r?\n?)$`)

// replaceHash puts hash in the password_hash line at pos ("file:line").
func replaceHash(data []byte, pos, hash string) ([]byte, error) {
	lines, n := lineAt(data, pos)
	var m [][]byte
	if n >= 0 {
		m = hashLine.FindSubmatch(lines[n])
	}
	if m == nil {
		return nil, fmt.Errorf("%s: not a password_hash = \"…\" line", pos)
	}
	lines[n] = slices.Concat(m[1], []byte(strconv.Quote(hash)), m[3])
	return bytes.Join(lines, nil), nil
}

// cutTable removes the [[web.user]] table whose header is at pos
// ("file:line"): the comment lines right above the header, the header,
// its keys and the blank lines after them; the comments right before the
// next table's header are that table's, and stay.
func cutTable(data []byte, pos string) ([]byte, error) {
	lines, n := lineAt(data, pos)
	if n < 0 || string(bytes.Join(bytes.Fields(lines[n]), nil)) != "[[web.user]]" {
		return nil, fmt.Errorf("%s: not a [[web.user]] header alone on its line", pos)
	}
	kind := func(i int) byte { // '[' a header, '#' a comment, ' ' a blank line, 'k' anything else
		l := bytes.TrimSpace(lines[i])
		switch {
		case len(l) == 0:
			return ' '
		case l[0] == '[' || l[0] == '#':
			return l[0]
		}
		return 'k'
	}
	start := n
	for start > 0 && kind(start-1) == '#' {
		start--
	}
	end := n + 1 // after the table's last key
	for i := n + 1; i < len(lines) && kind(i) != '['; i++ {
		if kind(i) == 'k' {
			end = i + 1
		}
	}
	for end < len(lines) && kind(end) == ' ' {
		end++
	}
	return bytes.Join(slices.Delete(lines, start, end), nil), nil
}

// lineAt splits data into its lines, each with its line break, and
// returns the index of the line "file:line" names, or -1.
func lineAt(data []byte, pos string) ([][]byte, int) {
	lines := bytes.SplitAfter(data, []byte("\n"))
	n, err := strconv.Atoi(pos[strings.LastIndexByte(pos, ':')+1:])
	if err != nil || n < 1 || n > len(lines) {
		return lines, -1
	}
	return lines, n - 1
}

// appendChecked adds text at the end of the config file, keeping the
// change only if the whole file then loads: a duplicate name or any
// other mistake leaves the file as it was.
func appendChecked(file, text string) error {
	old, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	if len(old) > 0 && old[len(old)-1] != '\n' {
		text = "\n" + text
	}
	data := append(slices.Clip(old), text...)
	if _, err := policy.Parse(file, data); err != nil {
		return err
	}
	return replaceFile(file, old, data)
}

// errChanged: the file changed since it was read.
var errChanged = errors.New("the file changed while this ran (edited by someone else?); nothing was written; run the command again")

// replaceFile replaces file with data if it still holds old, through a
// rename, so that the gateway never reads half of it. What is replaced
// is the file's target: a symlinked config stays a symlink. The new file
// gets the old one's owner, group and mode: the packaged config is
// root:mailgate 0640, and one owned by whoever ran this, in their group,
// is one the gateway may not read (its reload and its next start fail).
// An owner that cannot be given (not root, and not the owner in the
// file's group) is refused with the file left as it was; so is a file
// changed since it was read (an editor, another `mailgate user`), whose
// change would be lost. (The check and the rename are two steps: an edit
// saved between them, microseconds apart, is not seen.)
func replaceFile(file string, old, data []byte) error {
	target, err := filepath.EvalSymlinks(file)
	if err != nil {
		return err
	}
	st, err := os.Stat(target)
	if err != nil {
		return err
	}
	owner, ok := st.Sys().(*syscall.Stat_t)
	if !ok {
		return fmt.Errorf("%s: its owner cannot be read", target)
	}
	dir := filepath.Dir(target)
	tmp, err := os.CreateTemp(dir, ".mailgate-*.toml")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	_, err = tmp.Write(data)
	if err == nil {
		if cerr := tmp.Chown(int(owner.Uid), int(owner.Gid)); cerr != nil {
			err = fmt.Errorf("%s belongs to %s and a copy cannot be given to them (%w); the file is left as it was: run this as root, or edit it by hand", target, ownerName(owner.Uid, owner.Gid), cerr)
		}
	}
	if err == nil {
		err = tmp.Chmod(st.Mode().Perm()) // after Chown, which may clear bits
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
	if now, err := os.ReadFile(target); err != nil || !bytes.Equal(now, old) {
		return fmt.Errorf("%s: %w", file, cmp.Or(err, errChanged))
	}
	if err := os.Rename(tmp.Name(), target); err != nil {
		return err
	}
	// The rename is durable once the directory is.
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ownerName is "user:group" of uid and gid, by name where they have one.
func ownerName(uid, gid uint32) string {
	u, g := strconv.FormatUint(uint64(uid), 10), strconv.FormatUint(uint64(gid), 10)
	if n, err := user.LookupId(u); err == nil {
		u = n.Username
	}
	if n, err := user.LookupGroupId(g); err == nil {
		g = n.Name
	}
	return u + ":" + g
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
