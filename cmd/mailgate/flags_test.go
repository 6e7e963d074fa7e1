package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"testing"
)

func TestParseAll(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		config string
		json   bool
		rest   []string
		err    error
	}{
		{[]string{"ID1", "ID2"}, "", false, []string{"ID1", "ID2"}, nil},
		{[]string{"-config", "f", "ID1"}, "f", false, []string{"ID1"}, nil},
		{[]string{"ID1", "-config", "f", "ID2", "-json"}, "f", true, []string{"ID1", "ID2"}, nil},
		{[]string{"ID1", "--", "-json"}, "", false, []string{"ID1", "-json"}, nil},
		{[]string{"ID1", "-confg", "f"}, "", false, nil, errUsage},
		{[]string{"ID1", "-h"}, "", false, nil, flag.ErrHelp},
	} {
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		config := fs.String("config", "", "")
		json := fs.Bool("json", false, "")
		rest, err := parseAll(fs, tc.args)
		if !errors.Is(err, tc.err) || (err == nil && (*config != tc.config || *json != tc.json || !slices.Equal(rest, tc.rest))) {
			t.Errorf("parseAll(%q) = %q, %v (config %q json %v); want %q, %v (config %q json %v)",
				tc.args, rest, err, *config, *json, tc.rest, tc.err, tc.config, tc.json)
		}
	}
}
