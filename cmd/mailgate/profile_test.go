package main

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/google/pprof/profile"
)

// TestProfileSegments: with MAILGATE_CPUPROFILE set, a process profiles
// its life in segments, SIGUSR1 beginning the one the directory's
// "segment" file names, and each segment is a profile pprof reads.
func TestProfileSegments(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(profileEnv, dir)
	stop, err := startProfile([]string{"plugin", "spf", "spam"})
	if err != nil {
		t.Fatal(err)
	}
	name := "plugin-spf+spam-" + strconv.Itoa(os.Getpid())
	for i, segment := range []string{"small", "idle"} {
		if err := os.WriteFile(filepath.Join(dir, profileSegmentFile), []byte(segment+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		syscall.Kill(os.Getpid(), syscall.SIGUSR1)
		want := filepath.Join(dir, segment, name+"-"+strconv.Itoa(i+2)+".pprof")
		for deadline := time.Now().Add(10 * time.Second); ; {
			if _, err := os.Stat(want); err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no %s 10 s after SIGUSR1", want)
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
	stop()
	for _, path := range []string{"start/" + name + "-1.pprof", "small/" + name + "-2.pprof", "idle/" + name + "-3.pprof"} {
		f, err := os.Open(filepath.Join(dir, path))
		if err != nil {
			t.Fatal(err)
		}
		_, err = profile.Parse(f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

// TestProfileSegmentName: a segment word that is no plain directory name
// is refused, and the segment under way goes on.
func TestProfileSegmentName(t *testing.T) {
	dir := t.TempDir()
	p := &profiler{dir: dir, name: "serve-1"}
	if err := p.begin("start"); err != nil {
		t.Fatal(err)
	}
	defer p.end()
	for _, bad := range []string{"", "../x", ".hidden", "a/b"} {
		os.WriteFile(filepath.Join(dir, profileSegmentFile), []byte(bad), 0o644)
		if err := p.next(); err == nil {
			t.Errorf("segment %q accepted", bad)
		}
		if p.f == nil {
			t.Fatalf("segment %q ended the profile", bad)
		}
	}
}
