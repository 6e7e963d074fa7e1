// Package pgtest starts a real PostgreSQL server (Debian package
// postgresql) for a test: a cluster made by initdb in a temporary
// directory, the server on a free 127.0.0.1 port with its Unix socket in
// that directory, trust authentication for the superuser "mailgate", and
// everything removed when the test ends. Tests get a fresh database each
// from NewDatabase; fault tests kill the server (kill -9 of the whole
// process group), stop it, and start it again on the same port and data.
//
// Debian installs the server programs outside PATH, under
// /usr/lib/postgresql/<version>/bin; pgtest looks on PATH first, then
// there (the newest version). PostgreSQL refuses to run as root: when the
// test runs as root (as CI does), initdb and postgres run as the user
// "postgres" that the package creates (or "nobody" if it does not exist),
// and the directory is theirs.
package pgtest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/mailgate/mailgate/stages/testkit"
)

const (
	// startTimeout bounds the wait for the server to take connections:
	// crash recovery after a kill runs first.
	startTimeout = 60 * time.Second
	// Superuser is the role initdb creates; it needs no password.
	Superuser = "mailgate"
)

// Server is a running PostgreSQL server; Kill (of the server and its
// backends: committed transactions survive in the write-ahead log), Stop
// (a "fast" shutdown, SIGINT: clients disconnected, open transactions
// rolled back), Restart (on the same port and data) and Log are its
// Daemon's.
type Server struct {
	*testkit.Daemon
	dir  string // holds data/ and the Unix socket
	port string
	cred *syscall.Credential // nil: run as ourselves
	dbs  atomic.Int64        // databases made by NewDatabase
}

// Start makes a cluster with initdb and starts the server on it, and
// returns once it takes connections. It stops when the test ends. When
// PostgreSQL is not installed the test fails under CI (CI set) and is
// skipped elsewhere, naming the package.
func Start(t testing.TB) *Server {
	t.Helper()
	bin, initdb := find(t)
	s := &Server{}
	cred, err := unprivileged()
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	s.cred = cred
	// Not t.TempDir: that directory is the test user's alone, and as
	// root the server runs as another user. A short path also keeps the
	// socket's within sun_path.
	s.dir, err = os.MkdirTemp("", "pgtest")
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { os.RemoveAll(s.dir) })
	if cred != nil {
		if err := os.Chown(s.dir, int(cred.Uid), int(cred.Gid)); err != nil {
			t.Fatalf("pgtest: %v", err)
		}
	}
	cmd := s.command(initdb, "-D", s.data(), "-U", Superuser, "--auth=trust", "--no-sync", "-E", "UTF8", "--locale=C")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pgtest: initdb: %v\n%s", err, out)
	}
	s.Daemon = testkit.NewDaemon(t, testkit.DaemonSpec{
		Name: "postgres",
		Command: func() *exec.Cmd {
			return s.command(bin, "-D", s.data(),
				"-h", "127.0.0.1", "-p", s.port, "-k", s.dir,
				// A test's data need not survive the machine, only the
				// process: fsync off changes nothing a kill shows (the
				// log is written to the kernel at commit all the same)
				// and spares the disk. synchronous_commit stays on for
				// that reason.
				"-c", "fsync=off", "-c", "full_page_writes=off",
				"-c", "shared_buffers=16MB", "-c", "max_connections=100",
				"-c", "log_min_messages=warning",
			)
		},
		Ready:        s.ready,
		StartTimeout: startTimeout,
		StopSignal:   syscall.SIGINT,
		StopTimeout:  30 * time.Second,
	})
	s.Launch(func() {
		addr := testkit.FreeAddr(t)
		s.port = addr[strings.LastIndex(addr, ":")+1:]
	})
	return s
}

func (s *Server) data() string { return filepath.Join(s.dir, "data") }

// Addr is the server's TCP address, 127.0.0.1:port.
func (s *Server) Addr() string { return "127.0.0.1:" + s.port }

// URL is the URL of database db as the superuser, over TCP.
func (s *Server) URL(db string) string {
	return "postgres://" + Superuser + "@" + s.Addr() + "/" + db + "?sslmode=disable"
}

// NewDatabase creates an empty database and returns its URL, so that the
// tests sharing one server do not see each other's tables.
func (s *Server) NewDatabase(t testing.TB) string {
	t.Helper()
	name := fmt.Sprintf("test%d", s.dbs.Add(1))
	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("pgtest: create database: %v", err)
	}
	return s.URL(name)
}

// command runs name as the server's user.
func (s *Server) command(name string, args ...string) *exec.Cmd {
	cmd := exec.Command(name, args...)
	cmd.Dir = s.dir
	if s.cred != nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: s.cred}
	}
	return cmd
}

// ready reports whether the server takes a connection and a query: while
// it starts or recovers it refuses with "the database system is starting
// up".
func (s *Server) ready(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, s.URL("postgres"))
	if err != nil {
		return err
	}
	defer conn.Close(ctx)
	return conn.Ping(ctx)
}

// find returns the paths of postgres and of the initdb of the same
// version, or ends the test naming the package.
func find(t testing.TB) (postgres, initdb string) {
	t.Helper()
	var dirs []string
	if p, err := exec.LookPath("postgres"); err == nil {
		if p, err := filepath.EvalSymlinks(p); err == nil {
			dirs = append(dirs, filepath.Dir(p))
		}
	}
	// Debian: /usr/lib/postgresql/15/bin; the newest version first.
	found, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	slices.SortFunc(found, func(a, b string) int { return version(b) - version(a) })
	dirs = append(dirs, found...)
	for _, d := range dirs {
		pg, in := filepath.Join(d, "postgres"), filepath.Join(d, "initdb")
		if isFile(pg) && isFile(in) {
			return pg, in
		}
	}
	msg := "postgres and initdb not found on PATH or in /usr/lib/postgresql/*/bin: install the Debian package postgresql (apt-get install postgresql)"
	if os.Getenv("CI") != "" {
		t.Fatal(msg)
	}
	t.Skip(msg)
	return "", ""
}

// version is the major version in a /usr/lib/postgresql/<version>/bin
// path, 0 if there is none.
func version(dir string) int {
	n, _ := strconv.Atoi(filepath.Base(filepath.Dir(dir)))
	return n
}

func isFile(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir()
}

// unprivileged returns the credentials to run PostgreSQL with when we are
// root (it refuses to run as root: "root" execution of the PostgreSQL
// server is not permitted), nil otherwise.
func unprivileged() (*syscall.Credential, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	var errs []error
	for _, name := range []string{"postgres", "nobody"} {
		u, err := user.Lookup(name)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err := errors.Join(err1, err2); err != nil {
			errs = append(errs, err)
			continue
		}
		return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}, nil
	}
	return nil, fmt.Errorf("running as root, and no user to run PostgreSQL as: %w", errors.Join(errs...))
}
