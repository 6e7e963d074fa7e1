// Package examples holds the configurations users start from. They are
// embedded so that `mailgate serve` without -config runs the quickstart, and
// a test loads every one of them so the examples cannot rot.
package examples

import (
	"embed"
	"io/fs"
)

//go:embed *.toml
var configs embed.FS

// Configs returns the example configuration files.
func Configs() fs.FS { return configs }

// Quickstart returns the embedded quickstart configuration.
func Quickstart() []byte {
	b, err := configs.ReadFile("quickstart.toml")
	if err != nil {
		panic(err) // embedded at build time: cannot fail
	}
	return b
}
