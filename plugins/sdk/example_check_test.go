package sdk_test

import (
	"context"
	"os"
	"strings"
	"testing"

	"github.com/mailgate/mailgate/plugins/sdk/sdktest"
	"github.com/mailgate/mailgate/stages"
)

// TestReadmeExample keeps the "Write a filter plugin" code of
// plugins/README.md the same as example_test.go, which compiles, and runs
// that filter through sdktest as the README shows.
func TestReadmeExample(t *testing.T) {
	src, err := os.ReadFile("example_test.go")
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	code := string(src)
	code = code[strings.Index(code, "import ("):strings.Index(code, "// In a plugin's package main")]
	if !strings.Contains(string(readme), code) {
		t.Errorf("plugins/README.md does not show example_test.go as it is; want:\n%s", code)
	}

	st, err := sdktest.Stage(t, newHeloCheck, `{"score": 3}`)
	if err != nil {
		t.Fatal(err)
	}
	tx := &stages.Transaction{Client: stages.Client{Helo: "localhost"}}
	v, err := st.Run(context.Background(), stages.Helo, tx)
	if err != nil || v.Action != stages.Tag || v.Score != 3 {
		t.Errorf("verdict %+v, %v", v, err)
	}
	if _, err := sdktest.Stage(t, newHeloCheck, `{"scor": 3}`); err == nil || !strings.Contains(err.Error(), "scor: unknown key") {
		t.Errorf("misspelt key: %v", err)
	}
}
