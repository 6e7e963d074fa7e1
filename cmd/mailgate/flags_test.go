package main

import (
	"errors"
	"flag"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/mailgate/mailgate/policy"
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

// TestLogDurations: a duration reads the same in text and JSON logs.
func TestLogDurations(t *testing.T) {
	for _, format := range []string{"text", "json"} {
		var b strings.Builder
		cfg := &policy.Config{}
		cfg.Log.Format = format
		newLogger(cfg, &b).Info("stage", "duration", 1500*time.Microsecond, "delay", 2*time.Second)
		for _, want := range []string{"1.5ms", "2s"} {
			if !strings.Contains(b.String(), want) {
				t.Errorf("%s log %q lacks %q", format, b.String(), want)
			}
		}
	}
}
