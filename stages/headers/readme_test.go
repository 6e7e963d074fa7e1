package headers

import (
	"context"
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// runs the stage it makes, so the documented keys and values stay valid.
func TestReadme(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "headers", New)
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
	for _, st := range sts {
		tx := &stages.Transaction{Header: stages.Header{
			{Name: "Subject", Value: "[EXT] [EXT] hello"},
			{Name: "X-Originating-IP", Value: "[10.1.2.3]"},
			{Name: "X-Spam-Flag", Value: "NO"},
		}}
		v, err := st.Filter.Run(context.Background(), stages.Data, tx)
		if err != nil {
			t.Fatal(err)
		}
		if err := stages.ApplyEdits(tx, v.Edits); err != nil {
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
