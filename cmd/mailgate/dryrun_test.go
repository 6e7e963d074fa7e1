package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/mailgate/mailgate/gateway"
	"github.com/mailgate/mailgate/state"
	"github.com/mailgate/mailgate/state/sqlstore"
)

// TestDryRunReadOnlyState: `mailgate test` reads the live state.db (the
// recipients' block-lists) without writing it: run by a user who may
// read it but not write it or its directory (nobody, when the tests run
// as root; else the test's user), it still refuses a blocked sender, and
// the file's bytes and the directory stay as they were. (The directory is
// 0555, not 0444: without x nobody may reach the file at all.) A state.db
// it may not read at all is said in the result, not passed over.
func TestDryRunReadOnlyState(t *testing.T) {
	root := t.TempDir()
	data := filepath.Join(root, "data")
	if err := os.Mkdir(data, 0o755); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(data, "state.db")
	st, err := sqlstore.OpenSQLite(context.Background(), db, sqlstore.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Lists().Add(context.Background(), state.ListEntry{Owner: "picky@dest.test", Kind: state.Block, Sender: "sender.test", By: "test"}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	config := filepath.Join(root, "mailgate.toml")
	msg := filepath.Join(root, "msg.eml")
	os.WriteFile(config, fmt.Appendf(nil, "hostname = \"mx.gateway.test\"\ndata_dir = %q\n[admin]\nlisten = \"\"\n[[route]]\ndomains = [\"dest.test\"]\nservers = [\"127.0.0.1:9\"]\n", data), 0o644)
	os.WriteFile(msg, []byte("From: a@sender.test\nTo: picky@dest.test\nSubject: hello\n\nHello.\n"), 0o644)
	for _, c := range []struct {
		path string
		mode os.FileMode
	}{{db, 0o444}, {data, 0o555}, {root, 0o755}, {filepath.Dir(root), 0o755}, {filepath.Dir(mailgateBin), 0o755}} {
		if err := os.Chmod(c.path, c.mode); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { os.Chmod(data, 0o755) }) // so that the test's directory can be removed
	before, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	names := func() []string {
		entries, _ := os.ReadDir(data)
		var out []string
		for _, e := range entries {
			out = append(out, e.Name())
		}
		return out
	}
	listing := names()

	dryRun := func() gateway.DryRunResult {
		t.Helper()
		cmd := exec.Command(mailgateBin, "test", "-config", config, "-json", "-from", "a@sender.test", "-to", "picky@dest.test", msg)
		if os.Geteuid() == 0 {
			cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("mailgate test: %v\n%s", err, stderr.String())
		}
		var res gateway.DryRunResult
		if err := json.Unmarshal(out, &res); err != nil {
			t.Fatalf("%v\n%s", err, out)
		}
		return res
	}
	res := dryRun()
	if res.Action != "reject" || res.Stage != "policy.user_block" || len(res.Warnings) != 0 {
		t.Errorf("blocked sender: action %q by %q, warnings %q; want reject by policy.user_block", res.Action, res.Stage, res.Warnings)
	}
	if after, _ := os.ReadFile(db); !bytes.Equal(before, after) {
		t.Error("the dry run changed state.db")
	}
	if got := names(); !slices.Equal(got, listing) {
		t.Errorf("the data directory holds %q, was %q", got, listing)
	}

	// In a cluster the lists are in PostgreSQL: a state.db left from
	// before the cluster is not read, and the warning says so.
	os.WriteFile(config, fmt.Appendf(nil, "hostname = \"mx.gateway.test\"\ndata_dir = %q\n[admin]\nlisten = \"\"\n[cluster]\npostgres = \"postgres://127.0.0.1:1/mailgate\"\n[[route]]\ndomains = [\"dest.test\"]\nservers = [\"127.0.0.1:9\"]\n", data), 0o644)
	res = dryRun()
	if res.Action != "accept" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "cluster's PostgreSQL") {
		t.Errorf("in a cluster: action %q, warnings %q; want accept and a warning that the cluster's lists were not checked", res.Action, res.Warnings)
	}
	os.WriteFile(config, fmt.Appendf(nil, "hostname = \"mx.gateway.test\"\ndata_dir = %q\n[admin]\nlisten = \"\"\n[[route]]\ndomains = [\"dest.test\"]\nservers = [\"127.0.0.1:9\"]\n", data), 0o644)

	if err := os.Chmod(db, 0); err != nil {
		t.Fatal(err)
	}
	res = dryRun()
	if res.Action != "accept" || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], db) || !strings.Contains(res.Warnings[0], "not checked") {
		t.Errorf("an unreadable state.db: action %q, warnings %q; want accept and a warning naming the file", res.Action, res.Warnings)
	}
}
