package headers

import (
	"context"
	"os"
	"regexp"
	"testing"

	"github.com/mailgate/mailgate/gateway/pipeline"
	"github.com/mailgate/mailgate/stages"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// runs the stage it makes, so the documented keys and values stay valid.
func TestReadme(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```toml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) == 0 {
		t.Fatal("no toml example in README.md")
	}
	for _, b := range blocks {
		for _, f := range loadStages(t, "README.md", b[1]) {
			tx := &stages.Transaction{Header: stages.Header{
				{Name: "Subject", Value: "[EXT] [EXT] hello"},
				{Name: "X-Originating-IP", Value: "[10.1.2.3]"},
				{Name: "X-Spam-Flag", Value: "NO"},
			}}
			v, err := f.Run(context.Background(), stages.Data, tx)
			if err != nil {
				t.Fatal(err)
			}
			if err := pipeline.ApplyEdits(tx, v.Edits); err != nil {
				t.Fatal(err)
			}
			if got := tx.Header.Get("Subject"); got != "[EXT] hello" {
				t.Errorf("README example: Subject %q", got)
			}
			if tx.Header.Get("X-Originating-IP") != "" || tx.Header.Get("X-Spam-Flag") != "" {
				t.Errorf("README example: fields not removed: %q", tx.Header)
			}
		}
	}
}
