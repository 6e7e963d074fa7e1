package policy

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// FuzzParse checks that no input makes the loader panic, that every error
// it returns names the file, and that the position index knows a line for
// every key the TOML parser found.
func FuzzParse(f *testing.F) {
	files, err := filepath.Glob("testdata/*.toml")
	if err != nil {
		f.Fatal(err)
	}
	more, err := filepath.Glob("testdata/errors/*.toml")
	if err != nil {
		f.Fatal(err)
	}
	for _, file := range append(files, more...) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(stagesSrc))
	f.Add([]byte(scanSrc))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.toml", data)
		if err != nil {
			var errs Errors
			if !errors.As(err, &errs) || len(errs) == 0 {
				t.Fatalf("error %T %q is not a non-empty Errors", err, err)
			}
			for _, e := range errs {
				if e.File != "f.toml" {
					t.Fatalf("error %q does not name the file", e)
				}
			}
		} else {
			for i := range c.Stages {
				var m map[string]any
				_ = c.StageConfig(i).Decode(&m)
				_, _ = c.StageConfigJSON(i)
			}
		}

		c, _ = decode("f.toml", data)
		if c == nil {
			return
		}
		for key := range c.src.defined {
			if _, ok := c.src.pos[key]; !ok {
				t.Errorf("no line for key %s", key)
			}
		}
	})
}
