package pipeline

import (
	"fmt"
	"os"
	"testing"
)

// binDir holds the binaries the tests and benchmarks build (buildBinary).
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "mailgate-pipeline-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binDir = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}
