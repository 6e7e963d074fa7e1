package filetype

import (
	"testing"

	"github.com/mailgate/mailgate/stages"
	"github.com/mailgate/mailgate/stages/readmetest"
)

// TestReadme loads every TOML example of README.md as the gateway does and
// builds the stage from it, so the documented keys and values stay valid,
// and checks the README has every kind's skeleton with this kind's result
// words.
func TestReadme(t *testing.T) {
	sts := readmetest.Stages(t, "README.md", "filetype", New)
	if got := sts[0].Results; got["encrypted"] != stages.Quarantine {
		t.Errorf("README example maps %v; want encrypted = quarantine, as its comment says", got)
	}
	f := sts[0].Filter.(*Filter)
	// As the example's comments say: msi allowed by name, 7z blocked.
	msi := mixed(att{"setup.msi", "application/x-msi", []byte("\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1\x00\x00")})
	if v := run(t, f, msi); v.Result != "clean" {
		t.Errorf("example: an .msi is %s (%s)", v.Result, v.Reason)
	}
	sevenZip := []byte("7z\xbc\xaf\x27\x1c\x00\x04")
	if v := run(t, f, mixed(att{"a.7z", "application/x-7z-compressed", sevenZip})); v.Result != "blocked" {
		t.Errorf("example: a 7z is %s (%s)", v.Result, v.Reason)
	}
	readmetest.Skeleton(t, "README.md", sts[0].Filter.Info())
}
